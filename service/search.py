"""The search engine: a sentence -> candidate units (videos' segments) from the three level
indexes -> rerank with HANet's own scoring code (the code evaluation uses, so serving cannot drift
from training) -> hits grouped by video, each with its best moments, or ranked moments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from corpus.moments import iou
from index.live import LiveIndex
from index.reader import Build
from index.vectors import video_of
from model import HANet, TextEmbeddings, VideoEmbeddings
from model.localise import moment_frames
from model.scores import fuse, weights_of
from service.candidates import Depth, candidates_many
from service.queries import QueryCache, batch_invariant, encode_queries

__all__ = ["QueryCache", "batch_invariant", "encode_queries"]  # and what is defined below

GROUP_BY = ("video", "moment")


REPEAT_IOU = 0.5  # a moment overlapping a better one of its video this much repeats it


@dataclass(frozen=True)
class Moment:
    """Where in a video a sentence matched: the stretch of the unit (segment) whose sampled
    frames are most relevant to it (``model.localise``), with the unit's scores and its own
    span."""

    start_s: float
    end_s: float
    score: float
    scores: dict[str, float]
    segment_start_s: float
    segment_end_s: float
    unit: int = -1  # the index unit (segment) it lies in


@dataclass(frozen=True)
class Hit:
    """A video found (``group_by`` "video": its best moments, best first) or one moment of it
    ("moment"); ``score``, ``scores`` and the span are the best moment's."""

    video_id: int
    score: float
    scores: dict[str, float]
    start_s: float
    end_s: float
    moments: tuple[Moment, ...] = ()


@dataclass(frozen=True)
class Like:
    """A "more like this" query: a video (optionally one stretch of it, in seconds) instead
    of a sentence."""

    video_id: int
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True, eq=False)
class Query:
    """One search: a sentence (or ``like``: a video; or neither: an image, service.similar),
    how many hits, hits as videos or as moments, and up to how many moments per video hit.
    ``rank_by``: the score that ranks them, HANet's fused one (served) or one level's
    (``model.scores``' names: evaluation's ablations). ``videos``: the ids the hits may come
    from (a filter's matches), all if None."""

    text: str
    top_k: int = 10
    group_by: str = "video"
    moments: int = 3
    rank_by: str = "fused"
    videos: np.ndarray | None = None
    like: Like | None = None
    fusion: tuple[float, ...] | None = None  # per-query level weights (model.explain)

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, not {self.group_by!r}")
        if self.top_k < 1 or self.moments < 1:
            raise ValueError("top_k and moments must be at least 1")


def _no_lap(stage: str) -> None:
    return None


@torch.inference_mode()
def search(
    model: HANet,
    build: Build,
    query: str | Query,
    top_k: int = 10,
    rerank: int = 200,
    lap: Callable[[str], None] = _no_lap,
    cache: QueryCache | None = None,
    concepts: bool = True,
    depth: Depth = Depth(),
) -> list[Hit]:
    """The ``top_k`` videos (or moments: ``Query.group_by``) for a sentence by HANet's fused
    score over ``rerank`` candidate units, with every level's score and the moments (the
    winning action segments' spans in seconds). ``lap(stage)`` is called as each stage ends
    (text, ann, gather, score, hits): a stopwatch for benchmarks. ``cache`` (of this model)
    remembers recent queries' text embeddings. ``concepts``: a concept candidate list too;
    ``depth``: how deep the candidate stage reads (``service.candidates.Depth``)."""
    query = query if isinstance(query, Query) else Query(query, top_k)
    return search_many(model, build, [query], rerank, lap, cache, concepts, depth)[0]


@torch.inference_mode()
def search_many(
    model: HANet,
    build: Build,
    queries: list[Query],
    rerank: int = 200,
    lap: Callable[[str], None] = _no_lap,
    cache: QueryCache | None = None,
    concepts: bool = True,
    depth: Depth = Depth(),
) -> list[list[Hit]]:
    """``search`` for several queries at once: one text-branch batch for them all, one FAISS
    search per level for all their vectors, then each query's own rerank (its candidates' rows
    and scores: queries share few candidates, and scoring every query against the union
    measured slower). The same hits as one ``search`` per query. ``lap`` as in ``search``:
    text and ann once, the rest per query. Sentences only: ``service.similar`` answers
    "more like this" queries (``Query.like``)."""
    if any(q.like is not None for q in queries):
        raise ValueError("search_many takes sentences; service.similar.similar takes videos")
    sentences = [q.text for q in queries]
    if cache is not None:
        texts = cache.encode_many(sentences)
    else:
        texts = encode_queries(model, list(dict.fromkeys(sentences)))
        texts = [texts[i] for i in _positions(sentences)]
    lap("text")
    limits = [max(rerank, q.top_k) for q in queries]
    videos = [q.top_k if q.group_by == "video" else 0 for q in queries]
    weights = [weights_of(q.rank_by, q.fusion or model.cfg.fusion) for q in queries]
    among = [q.videos for q in queries]
    found = candidates_many(build, texts, limits, videos, among, concepts, weights, depth)
    lap("ann")
    return [
        rerank_hits(model, build, t, ids, q, lap)
        for t, ids, q in zip(texts, found, queries, strict=True)
    ]


def _positions(queries: list[str]) -> list[int]:
    """Each query's position among the distinct queries (in first-seen order)."""
    first: dict[str, int] = {}
    return [first.setdefault(q, len(first)) for q in queries]


def rerank_hits(
    model: HANet,
    build: Build,
    text: TextEmbeddings,
    ids: list[int],
    query: Query,
    lap: Callable[[str], None] = _no_lap,
) -> list[Hit]:
    """The hits among the candidate units ``ids`` for one sentence by HANet's fused score:
    the best ``top_k`` units as moments, or the best ``top_k`` videos (a video's score is its
    best unit's) with up to ``moments`` of their units each; every moment refined inside its
    unit to the frames most relevant to the sentence (``model.localise``)."""
    if not ids:
        return []
    video, grams = build.rerank_rows(ids)
    lap("gather")
    scores = model.similarity(text, video, grams)
    if query.fusion is not None:
        scores["fused"] = fuse(scores, query.fusion)
    order = scores[query.rank_by][0].argsort(descending=True).tolist()
    lap("score")
    videos = video_of(np.asarray(ids, np.int64))

    def moments_of(chosen: list[int]) -> list[Moment]:  # for the hits only
        if not chosen:
            return []
        unit_scores = {k: v[0, chosen].tolist() for k, v in scores.items()}
        units = [ids[i] for i in chosen]
        return _moments(build, text, units, video.select(chosen), unit_scores, query.rank_by)

    hits = []
    for group in distinct_moments(order, videos, query, moments_of):
        best = group[0]
        hits.append(
            Hit(
                video_id=int(video_of(best.unit)),
                score=best.score,
                scores=best.scores,
                start_s=best.start_s,
                end_s=best.end_s,
                moments=tuple(group),
            )
        )
    lap("hits")
    return hits


def distinct_moments(
    order: list[int],
    videos: np.ndarray,
    query: Query,
    moments_of: Callable[[list[int]], list[Moment]],
) -> list[list[Moment]]:
    """Candidates in score order -> the hits' moments, as ``group_units`` groups them but
    without repeats: a moment whose span overlaps a better one of its video by IoU >=
    ``REPEAT_IOU`` (overlapping windows of one shot find the same moment) gives way to the
    next. ``moments_of`` refines candidates' moments, asked for as few as needed."""
    kept: dict[int, list[Moment]] = {}  # per video, its moments so far, best first
    if query.group_by == "moment":
        hits: list[list[Moment]] = []
        for at in range(0, len(order), query.top_k):
            batch = order[at : at + query.top_k]
            for i, moment in zip(batch, moments_of(batch), strict=True):
                same = kept.setdefault(int(videos[i]), [])
                if not _repeats(moment, same):
                    same.append(moment)
                    hits.append([moment])
                    if len(hits) == query.top_k:
                        return hits
        return hits
    pools: dict[int, list[int]] = {}  # the best videos' best units, twice what is shown
    for i in order:
        video = int(videos[i])
        if video in pools or len(pools) < query.top_k:
            pool = pools.setdefault(video, [])
            if len(pool) < 2 * query.moments:
                pool.append(i)
    chosen = [i for pool in pools.values() for i in pool]
    found = dict(zip(chosen, moments_of(chosen), strict=True))
    for video, pool in pools.items():
        same = kept.setdefault(video, [])
        for i in pool:
            if len(same) < query.moments and not _repeats(found[i], same):
                same.append(found[i])
    return [kept[video] for video in pools]


def _repeats(moment: Moment, better: list[Moment]) -> bool:
    span = (moment.start_s, moment.end_s)
    return any(iou(span, (b.start_s, b.end_s)) >= REPEAT_IOU for b in better)


def group_units(order: list[int], videos: np.ndarray, query: Query) -> list[list[int]]:
    """Candidates in score order -> the hits' candidates: each of the ``top_k`` best alone
    (moments), or the ``top_k`` best videos' best ``moments`` units each."""
    if query.group_by == "moment":
        return [[i] for i in order[: query.top_k]]
    groups: dict[int, list[int]] = {}
    for i in order:
        video = int(videos[i])
        if video in groups:
            if len(groups[video]) < query.moments:
                groups[video].append(i)
        elif len(groups) < query.top_k:
            groups[video] = [i]
    return list(groups.values())


def _moments(
    build: Build,
    text: TextEmbeddings,
    units: list[int],
    rows: VideoEmbeddings,
    scores: dict[str, list[float]],
    rank_by: str,
) -> list[Moment]:
    """Units' moments: in each unit, the run of frames around the one most relevant to the
    text (``model.localise``), in seconds inside its span, scored by ``rank_by``."""
    spans = moment_frames(text, rows)[0]
    valid = rows.frame_mask.sum(1).tolist()
    out = []
    for j, unit in enumerate(units):
        first, last = build.span(unit)
        times = build.frame_times(unit)[: valid[j]]
        start_s, end_s = stretch_in_unit(times, *spans[j], (first, last))
        out.append(
            Moment(
                start_s=start_s,
                end_s=end_s,
                score=scores[rank_by][j],
                scores={k: round(v[j], 4) for k, v in scores.items()},
                segment_start_s=round(first, 3),
                segment_end_s=round(last, 3),
                unit=unit,
            )
        )
    return out


class Searcher:
    """Searches over the live index with one model (the composition root builds it)."""

    def __init__(
        self,
        model: HANet,
        index: LiveIndex,
        cache: QueryCache,
        candidates: int,
        concepts: bool,
        depth: Depth = Depth(),
    ) -> None:
        self.model, self.index, self.cache, self.candidates = model, index, cache, candidates
        self.concepts = concepts  # a concept candidate list beside the levels'
        self.depth = depth  # how deep the candidate stage reads

    def search(
        self, query: str | Query, top_k: int = 10, lap: Callable[[str], None] = _no_lap
    ) -> list[Hit]:
        """The hits for ``query`` in the published index ([] before the first publish).
        Raises ``index.reader.BuildError`` when the index cannot serve this model."""
        build = self.index.current()
        if build is None:
            return []
        args = (self.candidates, lap, self.cache, self.concepts, self.depth)
        return search(self.model, build, query, top_k, *args)

    def search_many(self, queries: list[Query]) -> list[list[Hit]]:
        """``search`` for several queries at once (``service.search.search_many``), on one
        index build. Raises ``index.reader.BuildError`` as ``search`` does."""
        build = self.index.current()
        if build is None:
            return [[] for _ in queries]
        args = (self.candidates, _no_lap, self.cache, self.concepts, self.depth)
        return search_many(self.model, build, queries, *args)


def moment_seconds(times: np.ndarray, start: int, end: int) -> tuple[float, float]:
    """The stretch of video that sampled frames ``start..end`` (inclusive) stand for: each frame
    reaches halfway to its neighbours, and the first and last as far out on their open side, so
    even a one-frame segment is a span. ``times`` are the valid frames' timestamps in seconds."""
    t = np.asarray(times, dtype=np.float64)
    if len(t) == 1:
        return float(t[0]), float(t[0])
    bounds = np.concatenate(
        [[t[0] - (t[1] - t[0]) / 2], (t[1:] + t[:-1]) / 2, [t[-1] + (t[-1] - t[-2]) / 2]]
    )
    return round(max(0.0, float(bounds[start])), 3), round(float(bounds[end + 1]), 3)


def stretch_in_unit(
    times: np.ndarray, start: int, end: int, span: tuple[float, float]
) -> tuple[float, float]:
    """``moment_seconds`` of frames ``start..end`` kept inside the unit's ``span`` (its first
    and last second), rounded to milliseconds: what a moment or an explanation shows."""
    start_s, end_s = moment_seconds(times, start, end)
    return round(max(start_s, span[0]), 3), round(min(end_s, span[1]), 3)
