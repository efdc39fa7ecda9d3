"""The HTTP contract, against SQLite and PostgreSQL, with a real model, indexer and FAISS."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import migrations
from indexer.job import IndexingCfg, run_indexing
from model import HANet, get_config
from service.app import create_app
from service.settings import HanetSettings


@pytest.fixture(scope="session")
def corpus(synth_corpus) -> Path:
    """The shared corpus (tests/conftest.py): synth000000.mp4 ..., notes.mp4 (not a video)."""
    return synth_corpus


@pytest.fixture(scope="session")
def checkpoint(vocab_checkpoint) -> Path:
    return vocab_checkpoint


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request, tmp_path, corpus, checkpoint) -> HanetSettings:
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = HanetSettings(
        data_dir=tmp_path / "data",
        database_url=url,
        checkpoint=checkpoint,
        media_root=corpus,
        max_upload_bytes=200_000,
    )
    yield s
    if url:
        migrations.downgrade(url, "base")


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


CFG = IndexingCfg(batch_size=4, decode_workers=1)


def _index(client: TestClient) -> None:
    state = client.app.state.hanet
    run_indexing(state.engine, state.searcher.model, state.settings.index_dir, CFG, progress=False)


def test_health_and_ready(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["index"] == "no build yet"


@pytest.mark.slow
def test_searches_run_on_the_thread_that_loaded_the_model(client, monkeypatch) -> None:
    """One thread does the torch work (service.state.open_state): a search on any thread-pool
    thread was measured a third slower, its OpenMP threads no longer spinning between
    operations."""
    import threading

    import service.search

    seen = []
    real = service.search.search_many

    def spy(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.search, "search_many", spy)
    client.post("/videos", json={"path": "synth000001.mp4"})
    _index(client)
    for query in ("a red circle", "a blue star moves left", "a square"):
        assert client.post("/search", json={"query": query}).status_code == 200
    assert len(seen) == 3 and all(name.startswith("hanet-search") for name in seen), seen
    assert len(set(seen)) == 1


@pytest.mark.slow
def test_threads_setting_reaches_the_search_thread(settings, monkeypatch) -> None:
    import faiss
    import torch

    import service.search

    seen = []
    real = service.search.search_many

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), faiss.omp_get_max_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(service.search, "search_many", spy)
    before = torch.get_num_threads()
    try:
        with TestClient(create_app(settings.model_copy(update={"threads": 1}))) as c:
            c.post("/videos", json={"path": "synth000001.mp4"})
            _index(c)
            assert c.post("/search", json={"query": "a red circle"}).status_code == 200
    finally:
        torch.set_num_threads(before)  # process-wide in torch: the next tests get theirs back
    assert seen == [(1, 1)]
    with pytest.raises(ValueError, match="threads"):
        HanetSettings(threads=0)


def test_a_repeated_query_skips_the_text_tower(client, monkeypatch) -> None:
    from service.search import QueryCache

    state = client.app.state.hanet
    for name in ("synth000001.mp4", "synth000002.mp4"):
        client.post("/videos", json={"path": name})
    _index(client)
    calls = []
    model = state.searcher.model
    real = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda texts: calls.append(texts) or real(texts))
    query = {"query": "a small red star moves left", "top_k": 2}
    first, again = (client.post("/search", json=query).json() for _ in range(2))
    assert first["hits"] and first["hits"] == again["hits"]
    assert calls == [["a small red star moves left"]]  # encoded once
    client.post("/search", json={"query": "a blue circle grows"})
    assert len(calls) == 2 and (state.searcher.cache.hits, state.searcher.cache.misses) == (1, 2)
    # least recently used goes first; size 0 keeps nothing
    small = QueryCache(model, size=1)
    small.encode("one"), small.encode("two"), small.encode("one")
    assert (small.hits, small.misses) == (0, 3)
    off = QueryCache(model, size=0)
    off.encode("one"), off.encode("one")
    assert (off.hits, off.misses) == (0, 2)


def test_reading_routes_answer_while_the_indexer_writes(client) -> None:
    """A write transaction held open elsewhere (the indexer's) delays no read-only route. On
    SQLite the app's connections get a busy timeout of 0 here, so a route that asked for the
    write lock (BEGIN IMMEDIATE) would fail at once instead of waiting."""
    from sqlalchemy import event, text

    video_id = client.post("/videos", json={"path": "synth000001.mp4"}).json()["id"]
    _index(client)  # so that a search has a hit whose row it reads
    state = client.app.state.hanet
    writer = state.engine
    if writer.dialect.name == "sqlite":

        @event.listens_for(writer, "connect")
        def _no_waiting(dbapi_conn, _record) -> None:  # after make_engine's own pragmas
            dbapi_conn.execute("PRAGMA busy_timeout=0")

        writer.dispose()  # the pooled connections are made again, with it
        state.torch_thread.submit(state.hit_rows.close).result()  # so is the search thread's
    with writer.begin() as conn:
        conn.execute(text("UPDATE videos SET title = 'busy' WHERE id = :i"), {"i": video_id})
        assert client.get("/ready").status_code == 200
        assert client.get("/videos").json()["total"] == 1
        assert client.get(f"/videos/{video_id}").json()["title"] is None  # the last commit
        hits = client.post("/search", json={"query": "a red circle"}).json()["hits"]
        assert [h["video_id"] for h in hits] == [video_id]


def test_ingest_index_search_delete(client, corpus) -> None:
    first = client.post("/videos", json={"path": "synth000001.mp4", "title": "one"})
    assert first.status_code == 202 and first.json()["status"] == "pending"
    again = client.post("/videos", json={"path": "synth000001.mp4"})
    assert again.json()["id"] == first.json()["id"]
    by_path = {}  # id -> file name
    for name in ("synth000002.mp4", "synth000003.mp4"):
        response = client.post("/videos", json={"path": name})
        assert response.status_code == 202
        by_path[response.json()["id"]] = name
    refused = client.post("/videos", json={"path": "notes.mp4"})  # a text file named .mp4
    assert refused.status_code == 415 and "not a video" in refused.json()["detail"]
    with open(corpus / "synth000004.mp4", "rb") as f:
        up = client.post(
            "/videos", files={"file": ("clip.mp4", f, "video/mp4")}, data={"title": "uploaded"}
        )
    assert up.status_code == 202 and up.json()["title"] == "uploaded"
    _index(client)
    videos = client.get("/videos").json()
    assert videos["total"] == 4  # the refused file left no row
    assert {v["status"] for v in videos["items"]} == {"indexed"}
    one = client.get(f"/videos/{first.json()['id']}").json()
    assert one["duration_s"] == pytest.approx(2.0) and len(one["concepts"]["actions"]) == 3

    found = client.post("/search", json={"query": "a red star moves left", "top_k": 3}).json()
    assert len(found["hits"]) == 3 and found["took_ms"] > 0
    hit = found["hits"][0]
    keys = {"video_id", "title", "score", "scores", "moment", "moments", "duration_s", "concepts"}
    assert set(hit) == keys | {"tags", "metadata", "explain"} and hit[
        "duration_s"
    ] == pytest.approx(2.0)
    assert (hit["tags"], hit["metadata"], hit["explain"]) == ([], {}, None)  # none asked for
    assert {"global", "local_action", "fused"} <= set(hit["scores"])
    assert 0 <= hit["moment"]["start_s"] <= hit["moment"]["end_s"] <= 2.0
    # a clip is one segment: its one moment is the hit's, inside the whole clip
    (moment,) = hit["moments"]
    assert (moment["start_s"], moment["end_s"]) == (
        hit["moment"]["start_s"],
        hit["moment"]["end_s"],
    )
    assert moment["score"] == hit["score"] and moment["segment"]["start_s"] == 0.0
    assert moment["segment"]["end_s"] == pytest.approx(2.0)
    assert one["segments"] == 1 and one["progress"] == 1.0
    for h in found["hits"]:  # a hit's concepts are the video's own
        assert h["concepts"] == client.get(f"/videos/{h['video_id']}").json()["concepts"]
    scores = [h["score"] for h in found["hits"]]
    assert scores == sorted(scores, reverse=True)
    high = client.post("/search", json={"query": "a red star", "min_score": 10.0}).json()
    assert high["hits"] == []

    gone = next(h["video_id"] for h in found["hits"] if h["video_id"] in by_path)  # best by path
    assert client.delete(f"/videos/{gone}").status_code == 204
    assert client.get(f"/videos/{gone}").status_code == 404
    after = client.post("/search", json={"query": "a red star moves left", "top_k": 10}).json()
    assert gone not in {h["video_id"] for h in after["hits"]} and len(after["hits"]) == 3

    # deleting an upload removes the stored copy; a file ingested by path stays where it was
    uploads = client.app.state.hanet.settings.upload_dir
    assert len(list(uploads.glob("*.mp4"))) == 1
    assert client.delete(f"/videos/{up.json()['id']}").status_code == 204
    assert list(uploads.glob("*.mp4")) == []
    kept = next(v for v in by_path if v != gone)
    assert client.delete(f"/videos/{kept}").status_code == 204  # ingested by path
    assert (corpus / by_path[kept]).is_file()


def test_a_videos_concepts_come_from_its_row(client) -> None:
    """A video's concepts are the ones stored on its row (the indexer writes them with the
    indexed status): its page reads no index build, and the search hits show the same."""
    from sqlalchemy import update

    from db.schema import Video

    engine = client.app.state.hanet.engine

    def set_row(video_id: int, **values) -> None:
        with engine.begin() as conn:
            conn.execute(update(Video).where(Video.id == video_id).values(**values))

    mine = {"actions": [{"name": "juggle", "probability": 0.5}], "entities": []}
    first = client.post("/videos", json={"path": "synth000001.mp4"}).json()["id"]
    assert client.get(f"/videos/{first}").json()["concepts"] is None  # pending
    set_row(first, status="indexed", concepts=mine)
    assert client.get("/ready").json()["checks"]["index"] == "no build yet"
    assert client.get(f"/videos/{first}").json()["concepts"] == mine  # no build needed
    set_row(first, status="pending")
    assert client.get(f"/videos/{first}").json()["concepts"] is None  # shown while indexed

    second = client.post("/videos", json={"path": "synth000002.mp4"}).json()["id"]
    set_row(first, status="failed")  # not for this indexer run
    _index(client)
    stored = client.get(f"/videos/{second}").json()["concepts"]
    assert [len(stored[k]) for k in ("actions", "entities")] == [3, 3]  # the indexer's
    [hit] = client.post("/search", json={"query": "a red circle"}).json()["hits"]
    assert hit["video_id"] == second and hit["concepts"] == stored
    set_row(second, concepts=mine)
    [hit] = client.post("/search", json={"query": "a red circle"}).json()["hits"]
    assert hit["concepts"] == mine == client.get(f"/videos/{second}").json()["concepts"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"query": ""}}, 422),
        ({"json": {}}, 422),
        ({"json": {"query": "x" * 100_000}}, 422),
        ({"json": {"query": "a cat", "top_k": 0}}, 422),
        ({"json": {"query": "a cat", "top_k": -1}}, 422),
        ({"json": {"query": "a cat", "top_k": 10**9}}, 422),
        ({"json": {"query": "a cat", "top_k": "ten"}}, 422),
        ({"content": b"{broken", "headers": {"content-type": "application/json"}}, 422),
    ],
)
def test_bad_searches_get_clear_4xx(client, kwargs, status) -> None:
    response = client.post("/search", **kwargs)
    assert response.status_code == status
    assert "detail" in response.json()


def test_numbers_the_database_cannot_hold_are_a_422(client) -> None:
    """What a fuzzer found: integers beyond 64 bits in paths and queries were HTTP 500s."""
    huge = 755643302958058822434816
    cases = [
        ("get", f"/videos/{huge}"),
        ("get", f"/videos/{huge}/file"),
        ("get", f"/videos/{huge}/thumbnail"),
        ("delete", f"/videos/{huge}"),
        ("get", f"/videos?offset={huge}"),
        ("get", "/videos/0"),
        ("get", "/videos?offset=-1"),
        ("get", f"/videos/{2**31}"),  # past PostgreSQL's INTEGER
    ]
    for method, url in cases:
        response = getattr(client, method)(url)
        assert response.status_code == 422, (method, url, response.status_code)
        assert isinstance(response.json()["detail"], list)  # FastAPI's validation error shape
    assert client.get(f"/videos/{2**31 - 1}").status_code == 404  # the largest id is valid
    assert client.get(f"/videos?offset={2**63 - 1}").json()["items"] == []  # and offset


def test_bad_ingests_get_clear_4xx(client) -> None:
    cases = [
        (client.post("/videos", json={"path": "../../etc/passwd"}), 403, "media root"),
        (client.post("/videos", json={"path": "missing.mp4"}), 404, "no file"),
        (
            client.post("/videos", content=b"{oops", headers={"content-type": "application/json"}),
            400,
            "not valid JSON",
        ),
        (
            client.post("/videos", content=b"x", headers={"content-type": "text/plain"}),
            415,
            "multipart",
        ),
        (client.post("/videos", files={"file": ("e.mp4", b"", "video/mp4")}), 422, "empty"),
        (
            client.post("/videos", files={"file": ("big.mp4", b"0" * 300_000, "video/mp4")}),
            413,
            "larger",
        ),
        (
            client.post(
                "/videos", data={"title": "no file"}, files={"other": ("a.txt", b"a", "text/plain")}
            ),
            422,
            "file",
        ),
        (client.get("/videos/999999"), 404, "no video"),
        (client.delete("/videos/999999"), 404, "no video"),
        (client.get("/videos?limit=0"), 422, ""),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in str(response.json()["detail"])


def test_a_title_the_database_cannot_hold_is_a_422(client, corpus) -> None:
    """PostgreSQL refuses NUL characters in text (a 500, found by the fuzzer): a given title
    holding one is refused, by path and by upload; a file name holding one loses it."""
    video = (corpus / "synth000005.mp4").read_bytes()
    uploads = client.app.state.hanet.settings.upload_dir
    nul = "a\x00title"
    by_path = client.post("/videos", json={"path": "synth000005.mp4", "title": nul})
    upload = client.post("/videos", data={"title": nul}, files={"file": ("v.mp4", video)})
    long = client.post("/videos", data={"title": "x" * 501}, files={"file": ("v.mp4", video)})
    for response in (by_path, upload, long):
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["type"] in (
            "string_pattern_mismatch",
            "string_too_long",
        )
    assert not uploads.exists() or list(uploads.iterdir()) == []  # nothing kept
    raw = b'--b\r\nContent-Disposition: form-data; name="file"; filename="my\x00clip.mp4"\r\n\r\n'
    named = client.post(  # by hand: httpx would percent-encode the NUL
        "/videos",
        content=raw + video + b"\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert named.status_code == 202 and named.json()["title"] == "myclip.mp4"


def test_api_key_guards_changes_only(tmp_path, corpus, checkpoint) -> None:
    key = "k" * 24
    s = HanetSettings(
        data_dir=tmp_path / "data", checkpoint=checkpoint, media_root=corpus, api_key=key
    )
    with TestClient(create_app(s)) as c:
        body = {"path": "synth000001.mp4"}
        assert c.post("/videos", json=body).status_code == 401
        assert c.post("/videos", json=body, headers={"X-API-Key": "wrong" * 5}).status_code == 401
        created = c.post("/videos", json=body, headers={"X-API-Key": key})
        assert created.status_code == 202
        vid = created.json()["id"]
        assert c.delete(f"/videos/{vid}").status_code == 401
        assert c.post("/search", json={"query": "a cat"}).status_code == 200  # reading is open
        assert c.get(f"/videos/{vid}").status_code == 200
        assert c.delete(f"/videos/{vid}", headers={"X-API-Key": key}).status_code == 204
    with pytest.raises(ValueError, match="16 characters"):
        HanetSettings(api_key="short")


def test_an_empty_variable_counts_as_unset(monkeypatch) -> None:
    """Compose passes `HANET_API_KEY=${HANET_API_KEY:-}`: empty means no key, not a bad key."""
    monkeypatch.setenv("HANET_API_KEY", "")
    monkeypatch.setenv("HANET_MEDIA_ROOT", "")
    settings = HanetSettings()
    assert settings.api_key is None and settings.media_root is None
    monkeypatch.setenv("HANET_API_KEY", "short")
    with pytest.raises(ValueError, match="16 characters"):
        HanetSettings()


def test_metrics(client) -> None:
    client.post("/videos", json={"path": "synth000002.mp4"})
    client.post("/search", json={"query": "a blue square"})
    text = client.get("/metrics").text
    assert 'hanet_videos{status="pending"} 1.0' in text
    assert "hanet_queue_depth 1.0" in text
    assert 'hanet_request_seconds_count{method="POST",route="/search",status="200"} 1.0' in text


@pytest.mark.slow
def test_sixteen_concurrent_clients_over_http(settings) -> None:
    """A bounded load test on loopback: a real uvicorn server, 16 clients at once."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        threading.Event().wait(0.05)
    httpx.post(f"{base}/videos", json={"path": "synth000003.mp4"})
    _index_via(settings)

    def client_session(i: int) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as http:
            body = {"query": f"a red star moves left {i}", "top_k": 5}
            codes = [http.post("/search", json=body).status_code for _ in range(5)]
            codes.append(http.post("/search", json={"query": "", "top_k": 5}).status_code)
            return codes

    try:
        with ThreadPoolExecutor(16) as pool:
            results = [c for codes in pool.map(client_session, range(16)) for c in codes]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert results.count(200) == 16 * 5 and results.count(422) == 16


def _index_via(settings: HanetSettings) -> None:
    from db.connect import make_engine
    from model import load_checkpoint

    engine = make_engine(settings.resolved_database_url)
    run_indexing(
        engine, load_checkpoint(settings.checkpoint), settings.index_dir, CFG, progress=False
    )
    engine.dispose()


def test_openapi_documents_every_field_with_examples(client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("SearchRequest", "SearchResponse", "SearchHit", "VideoPublic", "VideoList"):
        schema = schemas[name]
        assert schema.get("examples"), name
        for field, spec in schema["properties"].items():
            assert spec.get("description"), (name, field)


@pytest.mark.slow
def test_int8_text_search_answers_like_float32(tmp_path, corpus, checkpoint) -> None:
    results = {}
    for int8 in (False, True):
        s = HanetSettings(
            data_dir=tmp_path / "data", checkpoint=checkpoint, media_root=corpus, int8_text=int8
        )
        with TestClient(create_app(s)) as c:
            if not int8:
                for name in ("synth000001.mp4", "synth000002.mp4", "synth000003.mp4"):
                    c.post("/videos", json={"path": name})
                _index(c)
            hits = c.post("/search", json={"query": "a red star moves left", "top_k": 3}).json()
            results[int8] = {h["video_id"]: h["score"] for h in hits["hits"]}
    assert len(results[True]) == 3 and set(results[True]) == set(results[False])
    for video_id, score in results[False].items():
        assert results[True][video_id] == pytest.approx(score, abs=0.02)
        assert results[True][video_id] != score  # the int8 tower really answered


@pytest.mark.slow
def test_a_new_build_serves_after_a_background_load(client, settings) -> None:
    """Searches keep the build in memory while a newer version loads beside them, then use it;
    a version the model cannot use (another checkpoint) is refused once it is read."""
    import time

    from index.live import LiveIndex
    from index.writer import promote

    client.post("/videos", json={"path": "synth000001.mp4"})
    _index(client)
    model = client.app.state.hanet.searcher.model
    own = LiveIndex(settings.index_dir, model.checkpoint_sha256)  # no watcher: each step is ours
    first = own.current()
    assert first.video_ids() == [1]
    client.post("/videos", json={"path": "synth000002.mp4"})
    _index(client)  # a new version is published
    assert own.current() is first  # answered at once from memory; the new one loads meanwhile
    deadline = time.monotonic() + 30
    while own.current() is first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert own.current().video_ids() == [1, 2]

    # the app's own state: a watcher loads new versions without a request asking first, and
    # a video's page shows its concepts at once (from its row, whatever build is in memory)
    state = client.app.state.hanet
    client.post("/videos", json={"path": "synth000003.mp4"})
    _index(client)
    assert client.get("/videos/3").json()["concepts"] is not None
    fourth = client.post("/videos", json={"path": "synth000005.mp4"}).json()["id"]
    _index(client)
    live = state.searcher.index
    while fourth not in live.loaded and time.monotonic() < deadline:
        time.sleep(0.05)  # nothing here asks for the build: the watcher loads it
    assert fourth in live.loaded
    hits = client.post("/search", json={"query": "a red star", "top_k": 5}).json()["hits"]
    assert {h["video_id"] for h in hits} == {1, 2, 3, fourth}

    other = HANet(get_config("tiny")).eval()  # a build of another model, promoted
    other_ckpt = state.settings.data_dir / "other.pt"
    other.save(str(other_ckpt))
    staging = state.settings.data_dir / "staging"
    from db.connect import make_engine

    engine = make_engine(state.settings.resolved_database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE videos SET status = 'pending'")
    run_indexing(engine, other, staging, CFG, progress=False)
    engine.dispose()
    promote(staging, state.settings.index_dir)
    while client.post("/search", json={"query": "a red star"}).status_code == 200:
        assert time.monotonic() < deadline + 30
        time.sleep(0.02)
    refused = client.post("/search", json={"query": "a red star"})
    assert refused.status_code == 409 and "hanet index rebuild" in refused.json()["detail"]
    assert client.get("/ready").status_code == 503
