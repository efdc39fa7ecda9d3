"""Candidate selection: the level indexes' best units (videos' segments), cut to the rerank budget
by rank fusion, a few per video at most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from index.reader import Build
from index.vectors import FaissStore, unit_id, video_of
from model import TextEmbeddings
from service.candidates import UNITS_PER_VIDEO, candidates, candidates_many
from service.search import Moment, Query, distinct_moments

DIM = 16


def _videos(units: list[int]) -> list[int]:
    """The videos of candidate units (one unit each in these tests: segment 0)."""
    assert all(u == unit_id(video_of(u), 0) for u in units)
    return [video_of(u) for u in units]


def _rows(videos) -> dict[int, tuple[int, int]]:
    """Rerank rows of one-unit videos 1..n at (part 0, row v - 1)."""
    return {unit_id(v, 0): (0, v - 1) for v in videos}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _text(sentence: np.ndarray, verb: np.ndarray, arg: np.ndarray) -> TextEmbeddings:
    """One sentence's embeddings; ``verb`` and ``arg``: one phrase (D,) or several (n, D)."""
    phrases = lambda v: torch.from_numpy(v).view(1, -1, DIM)  # noqa: E731
    return TextEmbeddings(
        global_=torch.from_numpy(sentence).view(1, DIM),
        verb_phrases=phrases(verb),
        arg_phrases=phrases(arg),
        verb_nodes=phrases(verb),
        arg_nodes=phrases(arg),
        verb_mask=torch.ones(1, phrases(verb).shape[1], dtype=torch.bool),
        arg_mask=torch.ones(1, phrases(arg).shape[1], dtype=torch.bool),
        verb_probs=torch.zeros(1, 4),
        noun_probs=torch.zeros(1, 4),
    )


def test_candidates_fuse_the_levels_and_keep_each_levels_best() -> None:
    rng = np.random.default_rng(0)
    store = FaissStore(DIM)
    vectors = {
        v: {
            lv: _unit(rng.normal(size=(n, DIM)))
            for lv, n in (("event", 1), ("action", 3), ("entity", 4))
        }
        for v in range(1, 51)
    }
    for video_id, vecs in vectors.items():
        store.add(video_id, vecs)
    build = Build(Path("."), {}, store, rows=_rows(vectors))
    # the sentence matches video 7's event vector, the verb video 20's action, the argument 33's
    text = _text(vectors[7]["event"][0], vectors[20]["action"][1], vectors[33]["entity"][2])
    assert _videos(candidates(build, text, 100)) == list(range(1, 51))  # all when the budget allows
    few = _videos(candidates(build, text, 3))
    assert len(few) == 3 and {7, 20, 33} == set(few)
    # reciprocal rank fusion by its definition: sum of 1 / (60 + rank) over the levels' lists
    fused: dict[int, float] = {}
    for level, query in (
        ("event", text.global_),
        ("action", text.verb_nodes[0]),
        ("entity", text.arg_nodes[0]),
    ):
        for rank, hit in enumerate(store.search(level, query.numpy(), 12)[0], start=1):
            fused[hit.video_id] = fused.get(hit.video_id, 0.0) + 1 / (60 + rank)
    expected = sorted(sorted(fused, key=lambda v: (-fused[v], v))[:12])
    assert _videos(candidates(build, text, 12)) == expected and len(set(fused)) > 12
    # a video with vectors but no rerank rows in the build is no candidate
    rowless = Build(Path("."), {}, store, rows=_rows(v for v in vectors if v != 20))
    assert _videos(candidates(rowless, text, 100)) == [v for v in vectors if v != 20]
    # nor is a tombstoned one, though its vectors are still in the index
    store.delete([33])
    tombstoned = Build(Path("."), {}, store, rows=_rows(v for v in vectors if v != 33))
    assert 33 not in _videos(candidates(tombstoned, text, 100))
    assert 20 in _videos(candidates(tombstoned, text, 3))


def test_candidates_of_several_sentences_at_once_are_each_sentences_own() -> None:
    """One FAISS search per level for all the sentences' vectors (and per distinct limit)
    finds for each sentence exactly what it finds alone."""
    rng = np.random.default_rng(1)
    store = FaissStore(DIM)
    for video_id in range(1, 41):
        store.add(
            video_id,
            {
                lv: _unit(rng.normal(size=(n, DIM)))
                for lv, n in (("event", 1), ("action", 3), ("entity", 4))
            },
        )
    build = Build(Path("."), {}, store, rows=_rows(range(1, 41)))
    texts = [  # one to three phrases of each kind
        _text(*(_unit(rng.normal(size=(n, DIM))) for n in (1, 1 + i % 2, 3 - i % 3)))
        for i in range(4)
    ]
    limits = [5, 12, 5, 40]
    together = candidates_many(build, texts, limits)
    assert together == [candidates(build, t, k) for t, k in zip(texts, limits, strict=True)]
    assert [len(c) for c in together] == [5, 12, 5, 40] and together[0] != together[2]


def test_a_long_videos_segments_take_a_few_candidate_places_at_most() -> None:
    """Video 1 has 30 segments all close to the sentence; with a budget of 12 it takes
    ``UNITS_PER_VIDEO`` places (its best segments), and the other videos the rest."""
    rng = np.random.default_rng(2)
    store = FaissStore(DIM)
    target = _unit(rng.normal(size=DIM))
    near = [_unit(target + 0.05 * rng.normal(size=DIM)) for _ in range(30)]
    store.add(1, [{"event": v[None], "action": v[None], "entity": v[None]} for v in near])
    for video_id in range(2, 21):
        store.add(
            video_id, {lv: _unit(rng.normal(size=(2, DIM))) for lv in ("event", "action", "entity")}
        )
    rows = {unit_id(1, s): (0, s) for s in range(30)}
    rows.update({unit_id(v, 0): (0, 30 + v) for v in range(2, 21)})
    build = Build(Path("."), {}, store, rows=rows)
    found = candidates(build, _text(target, target, target), 12)
    mine = [u for u in found if video_of(u) == 1]
    assert len(found) == 12 and len(mine) == UNITS_PER_VIDEO
    # its best segments: those nearest the sentence
    nearest = np.argsort([-(v @ target) for v in near])[:UNITS_PER_VIDEO]
    assert sorted(u - unit_id(1, 0) for u in mine) == sorted(nearest.tolist())


def test_a_search_for_videos_takes_more_units_until_it_has_enough_videos() -> None:
    """Three videos of five close segments each: a budget of 4 units holds one video; asking
    for three videos adds the best unit of each of the other two."""
    rng = np.random.default_rng(4)
    store = FaissStore(DIM)
    target = _unit(rng.normal(size=DIM))
    rows = {}
    for video_id in (1, 2, 3):
        spread = {1: 0.01, 2: 0.4, 3: 0.6}[video_id]  # video 1 nearest by far
        near = [_unit(target + spread * rng.normal(size=DIM)) for _ in range(5)]
        store.add(
            video_id, [{"event": v[None], "action": v[None], "entity": v[None]} for v in near]
        )
        rows.update({unit_id(video_id, s): (0, 5 * video_id + s) for s in range(5)})
    build = Build(Path("."), {}, store, rows=rows)
    text = _text(target, target, target)
    few = candidates(build, text, 4)
    assert len(few) == 4 and {video_of(u) for u in few} == {1}
    enough = candidates(build, text, 4, videos=3)
    assert len(enough) == 6 and {video_of(u) for u in enough} == {1, 2, 3}
    assert set(few) <= set(enough)


def _moment(unit: int, start_s: float, end_s: float, score: float) -> Moment:
    return Moment(start_s, end_s, score, {"fused": score}, 0.0, 60.0, unit)


def test_hits_never_repeat_a_moment_of_their_video() -> None:
    # units in score order: two overlapping windows of video 1 found the same stretch
    made = [
        _moment(unit_id(1, 0), 10.0, 13.0, 0.9),
        _moment(unit_id(1, 1), 10.5, 13.5, 0.8),  # IoU 2.5 / 3.5 with the first: a repeat
        _moment(unit_id(2, 0), 10.0, 13.0, 0.7),  # another video's: not a repeat
        _moment(unit_id(1, 2), 30.0, 32.0, 0.6),
        _moment(unit_id(1, 3), 12.0, 16.0, 0.5),  # IoU 1 / 6 with the first: kept
    ]
    order = list(range(len(made)))
    videos = video_of(np.array([m.unit for m in made], np.int64))
    asked: list[list[int]] = []

    def moments_of(chosen: list[int]) -> list[Moment]:
        asked.append(chosen)
        return [made[i] for i in chosen]

    moments = distinct_moments(order, videos, Query("x", top_k=3, group_by="moment"), moments_of)
    assert [[m.unit for m in g] for g in moments] == [[made[i].unit] for i in (0, 2, 3)]
    assert asked == [[0, 1, 2], [3, 4]]  # refined a batch at a time, no more than needed

    asked.clear()
    hits = distinct_moments(order, videos, Query("x", top_k=2, moments=3), moments_of)
    assert [[m.unit for m in g] for g in hits] == [
        [made[0].unit, made[3].unit, made[4].unit],
        [made[2].unit],
    ]
    assert asked == [[0, 1, 3, 4, 2]]  # the two best videos' units, each video's in order
