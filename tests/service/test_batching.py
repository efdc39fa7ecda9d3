"""Searches served together: the batcher on its own (a real worker thread, held busy by an
Event the test controls, so that requests pile up deterministically), then the real service:
a batch finds what each search finds alone, and a search that waits too long is a 503."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from indexer.job import IndexingCfg, run_indexing
from service.app import create_app
from service.batching import Batcher, Overloaded
from service.search import Query, QueryCache, batch_invariant, search, search_many
from service.settings import HanetSettings


@pytest.fixture
def worker():
    with ThreadPoolExecutor(1) as executor:
        yield executor


class Held:
    """The worker thread kept busy until ``release()``: what arrives meanwhile waits."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.busy, self.go = threading.Event(), threading.Event()
        executor.submit(self._hold)
        assert self.busy.wait(30)

    def _hold(self) -> None:
        self.busy.set()
        self.go.wait(60)

    def release(self) -> None:
        self.go.set()


class Recorder:
    """A ``serve`` that notes each batch and doubles its items (an item < 0 fails alone)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        return [ValueError(f"bad {x}") if x < 0 else 2 * x for x in items]


async def _until_waiting(batcher: Batcher, count: int) -> None:
    while batcher.stats().waiting < count:
        await asyncio.sleep(0.001)


def test_a_lone_request_is_served_alone(worker) -> None:
    batcher, serve = Batcher(worker, 8, 60), Recorder()
    assert asyncio.run(batcher.submit(serve, 3)) == 6
    assert asyncio.run(batcher.submit(serve, 4)) == 8
    assert serve.batches == [[3], [4]]


def test_requests_that_arrive_while_one_runs_go_together(worker) -> None:
    batcher, serve, other = Batcher(worker, 2, 60), Recorder(), Recorder()

    async def main() -> list:
        held = Held(worker)
        tasks = [asyncio.create_task(batcher.submit(serve, i)) for i in range(5)]
        tasks.insert(2, asyncio.create_task(batcher.submit(other, 10)))  # another kind of work
        await _until_waiting(batcher, 6)
        held.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    assert asyncio.run(main()) == [0, 2, 20, 4, 6, 8]
    assert serve.batches == [[0, 1], [2, 3], [4]]  # oldest first, at most batch_max at once
    assert other.batches == [[10]]  # never mixed with another serve's items
    stats = batcher.stats()
    assert (stats.batches, stats.served, stats.waiting) == (4, 6, 0)
    assert stats.sizes == {2: 2, 1: 2}


def test_a_failure_reaches_its_own_caller_or_the_whole_batch(worker) -> None:
    batcher, serve = Batcher(worker, 8, 60), Recorder()

    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("boom")

    async def main(fn, items: list[int]) -> list:
        held = Held(worker)
        tasks = [asyncio.create_task(batcher.submit(fn, i)) for i in items]
        await _until_waiting(batcher, len(items))
        held.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    one, bad, two = asyncio.run(main(serve, [1, -1, 2]))
    assert (one, two) == (2, 4) and isinstance(bad, ValueError) and serve.batches == [[1, -1, 2]]
    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main(broken, [1, 2])))


def test_a_request_that_waits_too_long_is_refused_and_never_served(worker) -> None:
    batcher, serve = Batcher(worker, 8, 0.01), Recorder()

    async def main() -> None:
        held = Held(worker)
        try:
            with pytest.raises(Overloaded) as refused:
                await batcher.submit(serve, 1)
            assert refused.value.retry_after_s == 1 and refused.value.waited_s >= 0.01
        finally:
            held.release()
        assert await batcher.submit(serve, 2) == 4  # served normally once the thread is free

    asyncio.run(main())
    assert serve.batches == [[2]]  # the refused one was withdrawn from the queue
    assert batcher.stats().overloaded == 1


def test_a_cancelled_request_is_dropped_from_the_queue(worker) -> None:
    batcher, serve = Batcher(worker, 8, 60), Recorder()

    async def main() -> None:
        held = Held(worker)
        task = asyncio.create_task(batcher.submit(serve, 1))
        await _until_waiting(batcher, 1)
        task.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        held.release()
        assert await batcher.submit(serve, 2) == 4

    asyncio.run(main())
    assert serve.batches == [[2]]


def test_batcher_arguments_are_checked(worker) -> None:
    with pytest.raises(ValueError):
        Batcher(worker, 0, 1.0)
    with pytest.raises(ValueError):
        Batcher(worker, 4, 0)


# -- the service, with the real tiny model --------------------------------------------------

QUERIES = [
    "a red star moves left",
    "a small blue circle grows, then a green square rotates",
    "a red star moves left",  # the same sentence twice in one batch
    "a yellow heart",
    "a big purple diamond bounces",
]


@pytest.fixture
def served(request, tmp_path, synth_corpus, vocab_checkpoint):
    """A service over six indexed videos of the shared corpus; searches wait at most a minute
    for their turn, or the seconds given as the fixture's parameter."""
    settings = HanetSettings(
        data_dir=tmp_path / "data",
        checkpoint=vocab_checkpoint,
        media_root=synth_corpus,
        search_wait_s=getattr(request, "param", 60.0),
    )
    with TestClient(create_app(settings)) as client:
        for i in range(1, 7):
            client.post("/videos", json={"path": f"synth00000{i}.mp4"})
        state = client.app.state.hanet
        cfg = IndexingCfg(batch_size=4, decode_workers=1)
        run_indexing(state.engine, state.searcher.model, settings.index_dir, cfg, progress=False)
        # the last version, on the spot: a watcher may have loaded the first batch's meanwhile,
        # and the searches compared must all see the same build
        assert len(state.searcher.index.current(wait=True)) == 6
        yield client


def _same_hits(batched, alone) -> None:
    assert [h.video_id for h in batched] == [h.video_id for h in alone]
    for b, a in zip(batched, alone, strict=True):
        assert b.score == pytest.approx(a.score, abs=1e-5)
        assert b.scores == pytest.approx(a.scores, abs=2e-4)  # rounded to 4 places
        assert (b.start_s, b.end_s) == (a.start_s, a.end_s)


@pytest.mark.slow
@pytest.mark.parametrize("int8", [False, True])
def test_a_batch_finds_what_each_search_finds_alone(served, int8) -> None:
    from model import load_checkpoint
    from model.speed import for_serving

    state = served.app.state.hanet
    build = state.searcher.index.current()
    model = state.searcher.model
    if int8:  # the int8 tower encodes one sentence at a time (service.search.batch_invariant)
        model = for_serving(load_checkpoint(state.settings.checkpoint).eval(), int8_text=True)
        assert not batch_invariant(model) and batch_invariant(state.searcher.model)
    top_k = [3, 5, 2, 6, 1]
    alone = [search(model, build, q, k, rerank=4) for q, k in zip(QUERIES, top_k, strict=True)]
    queries = [Query(q, k) for q, k in zip(QUERIES, top_k, strict=True)]
    batched = search_many(model, build, queries, rerank=4)
    assert [len(h) for h in batched] == [3, 5, 2, 6, 1]
    for b, a in zip(batched, alone, strict=True):
        _same_hits(b, a)
    # the query cache: the batch's unknown sentences encoded together, repeats counted as hits
    cache = QueryCache(model, size=8)
    cached = search_many(model, build, queries, rerank=4, cache=cache)
    assert (cache.hits, cache.misses) == (1, 4)
    again = search_many(model, build, queries[:2], rerank=4, cache=cache)
    assert (cache.hits, cache.misses) == (3, 4)
    for b, a in zip(cached + again, alone + alone[:2], strict=True):
        _same_hits(b, a)


@pytest.mark.slow
def test_searches_that_arrive_together_are_served_together(served) -> None:
    """Over HTTP (the app in-process): searches that arrive while the search thread is busy
    go through as one batch and answer what each answers alone."""
    state = served.app.state.hanet
    bodies = [{"query": q, "top_k": k} for q, k in zip(QUERIES, [3, 5, 2, 6, 1], strict=True)]
    before = state.searches.stats().sizes

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=served.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            held = Held(state.torch_thread)
            try:
                tasks = [asyncio.create_task(http.post("/search", json=b)) for b in bodies]
                await _until_waiting(state.searches, len(bodies))
            finally:
                held.release()
            return await asyncio.gather(*tasks)

    together = asyncio.run(main())
    assert [r.status_code for r in together] == [200] * len(bodies)
    after = state.searches.stats().sizes
    assert after.get(len(bodies), 0) == before.get(len(bodies), 0) + 1  # one batch of all
    for body, response in zip(bodies, together, strict=True):
        alone = served.post("/search", json=body).json()["hits"]
        got = response.json()["hits"]
        assert [h["video_id"] for h in got] == [h["video_id"] for h in alone]
        for g, a in zip(got, alone, strict=True):
            assert g["score"] == pytest.approx(a["score"], abs=2e-4)
            assert g["moment"] == a["moment"] and g["title"] == a["title"]


@pytest.mark.slow
@pytest.mark.parametrize("served", [0.1], indirect=True)  # searches wait 0.1 s at most
def test_a_search_that_waits_too_long_is_a_503_with_retry_after(served) -> None:
    state = served.app.state.hanet
    held = Held(state.torch_thread)  # a long search in progress
    try:
        refused = served.post("/search", json={"query": "a red star"})
    finally:
        held.release()
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"  # whole seconds (search_wait_s 0.1, rounded up)
    assert "busy" in refused.json()["detail"] and "retry" in refused.json()["detail"]
    assert served.post("/search", json={"query": "a red star"}).status_code == 200
    metrics = served.get("/metrics").text
    assert "hanet_search_overloaded_total 1.0" in metrics
    assert 'hanet_search_batch_size_bucket{le="1.0"}' in metrics
    assert 'hanet_request_seconds_count{method="POST",route="/search",status="503"} 1.0' in metrics
    spec = served.get("/openapi.json").json()["paths"]["/search"]["post"]["responses"]
    assert "Retry-After" in spec["503"]["headers"]
