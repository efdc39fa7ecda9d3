"""The FAISS vector store against exact brute-force search on seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from index.vectors import (
    SEGMENT_SLOTS,
    FaissStore,
    VectorStoreError,
    unit_id,
    vector_ids,
    video_of,
)

DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _corpus(videos: int = 300, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        v: {"event": _unit(rng, 1), "action": _unit(rng, 4), "entity": _unit(rng, 6)}
        for v in range(1, videos + 1)
    }


def _brute(corpus, level: str, query: np.ndarray, k: int, skip=()) -> list[tuple[int, float]]:
    best = {v: float((vecs[level] @ query).max()) for v, vecs in corpus.items() if v not in skip}
    return sorted(best.items(), key=lambda x: -x[1])[:k]


def _store(corpus, factory: str, nprobe: int = 8) -> FaissStore:
    store = FaissStore(DIM, factory, nprobe=nprobe, ef_search=200)
    for video_id, vecs in corpus.items():
        store.add(video_id, vecs)
    return store


def test_flat_equals_brute_force_per_level() -> None:
    corpus = _corpus()
    store = _store(corpus, "Flat")
    queries = _unit(np.random.default_rng(9), 5)
    for level in ("event", "action", "entity"):
        hits = store.search(level, queries, k=10)
        for q, row in zip(queries, hits, strict=True):
            expected = _brute(corpus, level, q, 10)
            assert [h.video_id for h in row] == [v for v, _ in expected]
            assert [h.score for h in row] == pytest.approx([s for _, s in expected], abs=1e-5)
    # the hit names the segment that scored best
    hit = store.search("action", queries[:1], k=1)[0][0]
    seg_scores = corpus[hit.video_id]["action"] @ queries[0]
    assert hit.segment == int(seg_scores.argmax())


@pytest.mark.parametrize("factory", ["HNSW16", "IVF16,Flat"])
def test_approximate_indexes_find_most_true_neighbours(factory: str) -> None:
    corpus = _corpus(400)
    # IVF: trained on the first 640 vectors of random (structureless) data; 12 of 16 lists
    store = _store(corpus, factory, nprobe=12)
    queries = _unit(np.random.default_rng(3), 20)
    recall = []
    for q, row in zip(queries, store.search("action", queries, k=10), strict=True):
        truth = {v for v, _ in _brute(corpus, "action", q, 10)}
        recall.append(len(truth & {h.video_id for h in row}) / 10)
    assert np.mean(recall) >= 0.9


def test_ivf_splits_one_query_over_its_lists_with_the_same_hits() -> None:
    import faiss

    store = _store(_corpus(400), "IVF16,Flat", nprobe=12)
    ivf = faiss.extract_index_ivf(faiss.downcast_index(store.indexes["action"]).index)
    query = _unit(np.random.default_rng(4), 1)
    ivf.parallel_mode = 0  # FAISS's default: threads over queries, so one query gets one
    by_query = store.search("action", query, k=10)
    assert ivf.parallel_mode == 1  # the store's: threads over the probed lists
    assert store.search("action", query, k=10) == by_query


def test_an_index_that_needs_training_stages_vectors_until_it_can_train(tmp_path) -> None:
    """IVF from the first video on: exact Flat search until a level holds 40 x nlist vectors,
    then the level moves to its trained IVF index with every vector it had."""
    import faiss

    store = FaissStore(DIM, "IVF8,Flat", nprobe=8)  # nprobe = nlist: IVF search is exact
    assert store.train_size == 40 * 8 and store.staged == {"event", "action", "entity"}
    corpus = _corpus(60)  # 60 event, 240 action, 360 entity vectors
    for video_id, vecs in corpus.items():
        store.add(video_id, vecs)
    assert store.staged == {"event", "action"}  # entity crossed 320 and trained
    inner = faiss.downcast_index(faiss.downcast_index(store.indexes["entity"]).index)
    assert isinstance(inner, faiss.IndexIVFFlat) and store.count("entity") == 360
    store.save(tmp_path / "v")
    loaded = FaissStore.load(tmp_path / "v", nprobe=8)
    assert loaded.staged == {"event", "action"}
    query = _unit(np.random.default_rng(5), 1)[0]
    for level in ("event", "action", "entity"):
        expected = [v for v, _ in _brute(corpus, level, query, 5)]
        assert [h.video_id for h in loaded.search(level, query, k=5)[0]] == expected


def test_a_pq_level_trains_without_polysemous_codes_for_the_same_hits() -> None:
    """FAISS trains PQ codes for polysemous filtering by default, which searches here never
    use: the store turns it off, and its hits equal those of an index trained with it on."""
    import faiss

    rng = np.random.default_rng(4)
    store = FaissStore(DIM, "IVF4,PQ8x4", nprobe=4)
    assert store.train_size == 40 * 16  # 16 centroids per 4-bit sub-quantiser
    vectors = _unit(rng, store.train_size)
    for video_id in range(1, 1 + len(vectors) // 8):  # 8 entity vectors a video
        store.add(video_id, {"event": vectors[:1], "entity": vectors[(video_id - 1) * 8 :][:8]})
    assert "entity" not in store.staged
    inner = faiss.downcast_index(faiss.downcast_index(store.indexes["entity"]).index)
    assert isinstance(inner, faiss.IndexIVFPQ) and not inner.do_polysemous_training
    reference = faiss.index_factory(DIM, "IVF4,PQ8x4", faiss.METRIC_INNER_PRODUCT)
    assert faiss.downcast_index(reference).do_polysemous_training  # FAISS's default
    reference.train(vectors)
    reference.add(vectors)
    faiss.downcast_index(reference).nprobe = 4
    queries = _unit(rng, 20)
    scores, rows = reference.search(queries, 200)
    got = store.search("entity", queries, k=5)
    for hits, row_scores, row in zip(got, scores, rows, strict=True):
        videos = list(dict.fromkeys(int(i) // 8 + 1 for i in row))[:5]  # best vector first
        assert [h.video_id for h in hits] == videos
        best = [row_scores[[int(i) // 8 + 1 for i in row].index(v)] for v in videos]
        assert [h.score for h in hits] == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_deleted_videos_vanish_at_once_and_compaction_drops_them(factory: str, tmp_path) -> None:
    corpus = _corpus(100)
    store = _store(corpus, factory)
    query = corpus[7]["event"][0]
    assert store.search("event", query, k=1)[0][0].video_id == 7
    store.delete([7, 8])
    for level in ("event", "action", "entity"):
        found = {h.video_id for h in store.search(level, query, k=100)[0]}
        assert not found & {7, 8}
    assert 9 in {h.video_id for h in store.search("event", corpus[9]["event"][0], k=1)[0]}
    store.delete([9])  # after searches that used the tombstones of 7 and 8
    assert 9 not in {h.video_id for h in store.search("event", corpus[9]["event"][0], k=5)[0]}
    store.add(9, corpus[9])  # added again (ids are never reused): replaced, still deleted
    assert 9 not in {h.video_id for h in store.search("event", corpus[9]["event"][0], k=5)[0]}
    assert store.count("action") == 100 * 4  # still in the files
    store.compact()
    assert store.count("action") == 97 * 4 and store.count("event") == 97
    assert store.deleted == {7, 8, 9} and store.tombstone_selector() == (None, ())
    expected = [v for v, _ in _brute(corpus, "entity", query, 5, skip={7, 8, 9})]
    if factory == "Flat":
        assert [h.video_id for h in store.search("entity", query, k=5)[0]] == expected


def test_re_adding_replaces_and_save_load_round_trip(tmp_path) -> None:
    corpus = _corpus(50)
    store = _store(corpus, "Flat")
    store.add(3, corpus[3])  # same video again: no duplicate vectors
    assert store.count("event") == 50 and store.count("entity") == 300
    store.delete([5])
    store.save(tmp_path / "v")
    loaded = FaissStore.load(tmp_path / "v")
    q = _unit(np.random.default_rng(1), 3)
    assert loaded.search("action", q, 7) == store.search("action", q, 7)
    assert loaded.deleted == {5} and loaded.videos == set(range(1, 51))


def test_ids_and_errors() -> None:
    assert vector_ids(3, 2).tolist() == [3 * SEGMENT_SLOTS, 3 * SEGMENT_SLOTS + 1]
    with pytest.raises(VectorStoreError):
        vector_ids(1, SEGMENT_SLOTS + 1)
    with pytest.raises(VectorStoreError, match="factory"):
        FaissStore(DIM, "NotAnIndex99")
    store = FaissStore(DIM)
    with pytest.raises(VectorStoreError, match="unknown level"):
        store.search("scene", np.zeros(DIM, np.float32), 1)
    with pytest.raises(VectorStoreError, match="dim"):
        store.add(1, {"event": np.zeros((1, DIM + 1), np.float32)})
    assert store.search("event", np.zeros(DIM, np.float32), 3) == [[]]


def test_a_videos_units_are_found_apart_replaced_together_and_deleted_together() -> None:
    """A video of several units (segments): each unit is a hit of its own at the unit level
    and its id tells the video and the segment; at the video level the video comes once, at
    its best unit. Re-adding it with fewer units drops the others; a delete hides them all."""
    rng = np.random.default_rng(5)
    long = [
        {"event": _unit(rng, 1), "action": _unit(rng, 3), "entity": _unit(rng, 2)} for _ in range(5)
    ]
    store = _store(_corpus(20), "Flat")
    store.add(99, long)
    query = long[3]["event"]
    units, scores, _ = store.top_units("event", query, 3)[0]
    assert units[0] == unit_id(99, 3) and video_of(int(units[0])) == 99
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    videos, _, _ = store.top_videos("event", query, 3)[0]
    assert videos[0] == 99 and list(videos).count(99) == 1
    hit = store.search("action", long[2]["action"][1], 1)[0][0]
    assert (hit.video_id, hit.unit, hit.segment) == (99, unit_id(99, 2), 1)
    assert store.count("action") == 20 * 4 + 5 * 3
    store.add(99, long[:2])  # indexed again with two segments
    assert store.count("action") == 20 * 4 + 2 * 3 and store.count("event") == 22
    assert unit_id(99, 3) not in store.top_units("event", query, 22)[0][0]
    store.delete([99])
    for level in ("event", "action", "entity"):
        found = store.top_units(level, long[0][level], 100)[0][0]
        assert not any(video_of(int(u)) == 99 for u in found)
    store.compact()
    assert store.count("event") == 20


def test_unit_ids_keep_videos_apart() -> None:
    assert unit_id(7, 0) != unit_id(0, 7) and video_of(unit_id(7, 5)) == 7
    assert video_of(np.array([unit_id(1, 0), unit_id(2, 9)])).tolist() == [1, 2]
    with pytest.raises(VectorStoreError):
        unit_id(1, 1 << 20)


def test_a_filtered_search_equals_brute_force_over_the_allowed_videos() -> None:
    corpus = _corpus()
    store = _store(corpus, "Flat")
    store.delete([5, 9])  # tombstones still hide videos inside the allowed set
    allowed = np.array([250, 5, 9, 17, 3, 120, 64, 299, 41, 88, 7, 2, 150])  # any order
    queries = _unit(np.random.default_rng(3), 3)
    for level in ("event", "action", "entity"):
        rows = store.top_units(level, queries, 8, videos=allowed)
        for q, (units, scores, _) in zip(queries, rows, strict=True):
            subset = {v: corpus[v] for v in allowed.tolist()}
            expected = _brute(subset, level, q, 8, skip={5, 9})
            assert video_of(units).tolist() == [v for v, _ in expected]
            assert scores.tolist() == pytest.approx([s for _, s in expected], abs=1e-5)
    # as many as the allowed videos hold, not fewer: 11 live ones, each one unit
    units, _, _ = store.top_units("event", queries[:1], 50, videos=allowed)[0]
    assert sorted(video_of(units).tolist()) == sorted(set(allowed.tolist()) - {5, 9})
    assert len(store.top_units("event", queries[:1], 5, videos=np.array([], np.int64))[0][0]) == 0
    # videos that are not stored select nothing; the selector follows added videos
    assert len(store.top_units("event", queries[:1], 5, videos=np.array([999]))[0][0]) == 0
    store.add(999, corpus[1])
    units, _, _ = store.top_units("event", queries[:1], 5, videos=np.array([999]))[0]
    assert video_of(units).tolist() == [999]


def test_a_narrow_filter_searches_an_ivf_index_deeper_not_shorter() -> None:
    corpus = _corpus(160)
    store = _store(corpus, "IVF16,Flat", nprobe=1)
    assert "action" not in store.staged  # trained: 640 action vectors
    allowed = np.arange(10, 160, 15)  # 10 of 160 videos
    query = _unit(np.random.default_rng(5), 1)
    units, scores, _ = store.top_units("action", query, 10, videos=allowed)[0]
    expected = _brute({v: corpus[v] for v in allowed.tolist()}, "action", query[0], 10)
    assert video_of(units).tolist() == [v for v, _ in expected]  # all 10, the true best
    assert scores.tolist() == pytest.approx([s for _, s in expected], abs=1e-5)


@pytest.mark.slow  # Milvus Lite starts a server: ~20 s on a loaded 2-core machine
def test_milvus_filters_by_a_video_expression_like_the_faiss_selector(tmp_path) -> None:
    pytest.importorskip("pymilvus")
    from index.milvus import MilvusStore, MilvusTarget
    from index.milvus_index import top_units_among

    corpus = _corpus(60)
    store = MilvusStore(MilvusTarget(str(tmp_path / "m.db"), prefix="f"), "b1", DIM)
    store.add_many({v: [vecs] for v, vecs in corpus.items()})
    store.flush()
    faiss_store = _store(corpus, "Flat")
    allowed = np.array([3, 7, 11, 42, 59])
    queries = _unit(np.random.default_rng(4), 2)
    for level in ("event", "action", "entity"):
        got = top_units_among(store, level, queries, 4, allowed)
        want = faiss_store.top_units(level, queries, 4, videos=allowed)
        for (units, scores, _), (w_units, w_scores, _) in zip(got, want, strict=True):
            assert units.tolist() == w_units.tolist()
            assert scores.tolist() == pytest.approx(w_scores.tolist(), abs=1e-5)
    nothing = top_units_among(store, "event", queries, 4, np.array([], np.int64))
    assert [len(units) for units, _, _ in nothing] == [0, 0]
