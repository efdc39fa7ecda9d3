"""The search engine: a sentence -> candidates from the three level indexes -> rerank with
HANet's own scoring code (the code evaluation uses, so serving cannot drift from training)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from index.live import LiveIndex
from index.reader import Build
from model import HANet, TextEmbeddings


@dataclass(frozen=True)
class Hit:
    video_id: int
    score: float
    scores: dict[str, float]
    start_s: float
    end_s: float


def _level_queries(text: TextEmbeddings) -> dict[str, np.ndarray]:
    """Query vectors per level: the sentence for events, its verb phrases (graph nodes) for
    action segments, its argument phrases for entities (the sentence when it has none)."""
    sentence = text.global_[0:1].float().numpy()
    verbs = text.verb_nodes[0][text.verb_mask[0]].float().numpy()
    args = text.arg_nodes[0][text.arg_mask[0]].float().numpy()
    return {
        "event": sentence,
        "action": verbs if len(verbs) else sentence,
        "entity": args if len(args) else sentence,
    }


class QueryCache:
    """The text branch's output for the ``size`` most recent queries: a repeated query (the
    page searching again, a popular sentence) skips the text tower. ``size`` 0 keeps none."""

    def __init__(self, model: HANet, size: int = 1024) -> None:
        self.model, self.size = model, size
        self._items: OrderedDict[str, TextEmbeddings] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def encode(self, query: str) -> TextEmbeddings:
        with self._lock:
            if query in self._items:
                self._items.move_to_end(query)
                self.hits += 1
                return self._items[query]
            self.misses += 1
        text = self.model.encode_text([query]).to("cpu")
        if self.size:
            with self._lock:
                self._items[query] = text
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return text


RRF_K = 60  # reciprocal rank fusion's usual constant


def candidates(build: Build, text: TextEmbeddings, limit: int) -> list[int]:
    """Up to ``limit`` videos to rerank for one sentence: each level index (and each of the
    sentence's phrases there) returns its best ``limit`` videos; the union is cut to ``limit``
    by reciprocal rank fusion (a video ranked high at any level stays in)."""
    videos, weights = [], []
    for level, queries in _level_queries(text).items():
        for found, _, _ in build.top_videos(level, queries, limit):
            videos.append(found)
            weights.append(1 / (RRF_K + np.arange(1, len(found) + 1)))
    if not videos:
        return []
    unique, which = np.unique(np.concatenate(videos), return_inverse=True)
    fused = np.bincount(which, weights=np.concatenate(weights), minlength=len(unique))  # in order
    known = build.known(unique)  # only videos with rerank rows in this build
    unique, fused = unique[known], fused[known]
    best = np.lexsort((unique, -fused))[:limit]  # highest first, ties by id
    return sorted(unique[best].tolist())


def _no_lap(stage: str) -> None:
    return None


@torch.inference_mode()
def search(
    model: HANet,
    build: Build,
    query: str,
    top_k: int = 10,
    rerank: int = 200,
    lap: Callable[[str], None] = _no_lap,
    cache: QueryCache | None = None,
) -> list[Hit]:
    """The ``top_k`` videos for ``query`` by HANet's fused score over ``rerank`` candidates,
    with every level's score and the moment (the winning action segment's span in seconds).
    ``lap(stage)`` is called as each stage ends (text, ann, gather, score, hits): a stopwatch
    for benchmarks. ``cache`` (of this model) remembers recent queries' text embeddings."""
    text = cache.encode(query) if cache is not None else model.encode_text([query]).to("cpu")
    lap("text")
    ids = candidates(build, text, max(rerank, top_k))
    lap("ann")
    if not ids:
        return []
    video, grams = build.rerank_rows(ids)
    lap("gather")
    scores = model.similarity(text, video, grams)
    order = scores["fused"][0].argsort(descending=True)[:top_k].tolist()
    lap("score")
    best = video.select(order)  # the moment: for the hits only
    best_grams = {k: g[order] for k, g in grams.items()} if grams is not None else None
    segments = model.best_action_segment(text, best, best_grams)[0]
    # plain Python numbers, one conversion per array rather than per element
    spans = best.action_spans[torch.arange(len(order)), segments].tolist()  # (hits, 2)
    valid = best.frame_mask.sum(1).tolist()
    hit_scores = {k: v[0, order].tolist() for k, v in scores.items()}
    hits = []
    for j, i in enumerate(order):
        start, end = spans[j]
        start_s, end_s = moment_seconds(build.frame_times(ids[i])[: valid[j]], start, end)
        hits.append(
            Hit(
                video_id=ids[i],
                score=hit_scores["fused"][j],
                scores={k: round(v[j], 4) for k, v in hit_scores.items()},
                start_s=start_s,
                end_s=end_s,
            )
        )
    lap("hits")
    return hits


class Searcher:
    """Searches over the live index with one model (the composition root builds it)."""

    def __init__(self, model: HANet, index: LiveIndex, cache: QueryCache, candidates: int) -> None:
        self.model, self.index, self.cache, self.candidates = model, index, cache, candidates

    def search(self, query: str, top_k: int, lap: Callable[[str], None] = _no_lap) -> list[Hit]:
        """The ``top_k`` hits for ``query`` in the published index ([] before the first
        publish). Raises ``index.reader.BuildError`` when the index cannot serve this model."""
        build = self.index.current()
        if build is None:
            return []
        return search(self.model, build, query, top_k, self.candidates, lap, self.cache)


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
