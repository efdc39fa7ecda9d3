"""The vector store's contract, run against FAISS and Milvus (Milvus Lite, in-process from a
local file) alike: exact search per level, deletes hidden at once, re-adding replaces, a
video's units found apart and deleted together."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from index.vectors import FaissStore, unit_id, video_of

pymilvus = pytest.importorskip("pymilvus")

DIM = 16
LEVELS = ("event", "action", "entity")


@pytest.fixture(scope="module")
def milvus_file(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


@pytest.fixture(params=["faiss", "milvus"])
def make_store(request, milvus_file):
    """A fresh, empty store of each kind (Milvus: collections under a new prefix)."""

    def make():
        if request.param == "faiss":
            return FaissStore(DIM, "Flat")
        from index.milvus import MilvusStore, MilvusTarget

        prefix = f"t{uuid.uuid4().hex[:8]}"
        return MilvusStore(MilvusTarget(milvus_file, prefix=prefix), "b1", DIM, "Flat")

    return make


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _levels(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One unit's vectors: one event vector, two per key segment level."""
    return {"event": _unit(rng, 1), "action": _unit(rng, 2), "entity": _unit(rng, 2)}


def _corpus(videos: int = 60, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        v: {"event": _unit(rng, 1), "action": _unit(rng, 4), "entity": _unit(rng, 3)}
        for v in range(1, videos + 1)
    }


def _brute(corpus, level: str, query: np.ndarray, k: int, skip=()) -> list[tuple[int, float]]:
    best = {v: float((vecs[level] @ query).max()) for v, vecs in corpus.items() if v not in skip}
    return sorted(best.items(), key=lambda x: -x[1])[:k]


def _filled(make, corpus):
    store = make()
    if hasattr(store, "add_many"):
        store.add_many({v: [vecs] for v, vecs in corpus.items()})
    else:
        for video_id, vecs in corpus.items():
            store.add(video_id, vecs)
    return store


def test_exact_search_equals_brute_force_per_level(make_store) -> None:
    corpus = _corpus()
    store = _filled(make_store, corpus)
    queries = _unit(np.random.default_rng(9), 3)
    for level in LEVELS:
        assert store.count(level) == sum(len(v[level]) for v in corpus.values())
        for q, row in zip(queries, store.search(level, queries, k=8), strict=True):
            expected = _brute(corpus, level, q, 8)
            assert [h.video_id for h in row] == [v for v, _ in expected]
            assert [h.score for h in row] == pytest.approx([s for _, s in expected], abs=1e-4)
    hit = store.search("action", queries[:1], k=1)[0][0]  # the hit names its best segment
    assert hit.segment == int((corpus[hit.video_id]["action"] @ queries[0]).argmax())


def test_deleted_videos_vanish_at_once(make_store) -> None:
    corpus = _corpus()
    store = _filled(make_store, corpus)
    q = _unit(np.random.default_rng(3), 1)
    top = [h.video_id for h in store.search("event", q, k=5)[0]]
    store.delete(top[:2])
    for level in LEVELS:
        after = [h.video_id for h in store.search(level, q, k=5)[0]]
        assert after == [v for v, _ in _brute(corpus, level, q[0], 5, skip=top[:2])]
    assert set(top[:2]) <= store.deleted


def test_a_videos_units_are_found_apart_replaced_together_and_deleted_together(
    make_store,
) -> None:
    rng = np.random.default_rng(5)
    store = make_store()
    three = [_levels(rng) for _ in range(3)]
    store.add(7, three)
    store.add(8, _levels(rng))
    q = three[2]["event"]
    ids, scores, _ = store.top_units("event", q, 4)[0]
    assert ids[0] == unit_id(7, 2) and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert sorted(ids.tolist()) == sorted([unit_id(7, s) for s in range(3)] + [unit_id(8, 0)])
    store.add(7, three[:1])  # re-indexed as one unit: its other two are gone
    ids, _, _ = store.top_units("action", q, 10)[0]
    assert sorted(ids.tolist()) == [unit_id(7, 0), unit_id(8, 0)]
    assert store.count("event") == 2
    store.delete([7])
    for level in LEVELS:
        ids, _, _ = store.top_units(level, q, 10)[0]
        assert video_of(ids).tolist() == [8]


def test_top_videos_groups_a_videos_units(make_store) -> None:
    rng = np.random.default_rng(11)
    store = make_store()
    units = [_levels(rng) for _ in range(4)]
    store.add(3, units)
    store.add(4, _levels(rng))
    videos, _, _ = store.top_videos("action", units[1]["action"][:1], 5)[0]
    assert videos.tolist()[0] == 3 and sorted(videos.tolist()) == [3, 4]
