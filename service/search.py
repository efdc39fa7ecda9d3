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
        return self.encode_many([query])[0]

    def encode_many(self, queries: list[str]) -> list[TextEmbeddings]:
        """Each query's text embeddings (one row each), the ones not remembered encoded in one
        batch (a query repeated within ``queries`` once)."""
        found: dict[str, TextEmbeddings | None] = {}
        with self._lock:
            for query in queries:
                if query in found:
                    self.hits += 1
                elif query in self._items:
                    self._items.move_to_end(query)
                    self.hits += 1
                    found[query] = self._items[query]
                else:
                    self.misses += 1
                    found[query] = None
        missing = [q for q, text in found.items() if text is None]
        if missing:
            found.update(zip(missing, encode_queries(self.model, missing), strict=True))
            if self.size:
                with self._lock:
                    for query in missing:
                        self._items[query] = found[query]
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
        return [found[q] for q in queries]


def encode_queries(model: HANet, queries: list[str]) -> list[TextEmbeddings]:
    """Each sentence's text embeddings (one row each, on the CPU): from one text-branch batch,
    or one sentence at a time where the batch would change them (``batch_invariant``). Rows are
    copied out of the batch: a remembered query keeps its own row, not the whole batch."""
    if len(queries) == 1:
        return [model.encode_text(queries).to("cpu")]
    if not batch_invariant(model):
        return [model.encode_text([q]).to("cpu") for q in queries]
    text = model.encode_text(queries).to("cpu")
    return [text.select([i]) for i in range(len(queries))]


def batch_invariant(model: HANet) -> bool:
    """Whether the text branch encodes a sentence the same in any batch (to float rounding):
    not with the int8 text tower (``model.speed.quantize_text_tower``), whose dynamic
    quantisation scales each layer's input by the whole batch's range, so a sentence's
    embedding would move with the sentences it happens to be batched with."""
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    return not any(isinstance(m, dynamic) for m in model.text.modules())


RRF_K = 60  # reciprocal rank fusion's usual constant
LEVEL_ORDER = ("event", "action", "entity")  # as _level_queries gives them


def candidates(build: Build, text: TextEmbeddings, limit: int) -> list[int]:
    """Up to ``limit`` videos to rerank for one sentence: each level index (and each of the
    sentence's phrases there) returns its best ``limit`` videos; the union is cut to ``limit``
    by reciprocal rank fusion (a video ranked high at any level stays in)."""
    return candidates_many(build, [text], [limit])[0]


def candidates_many(
    build: Build, texts: list[TextEmbeddings], limits: list[int]
) -> list[list[int]]:
    """``candidates`` for several sentences (one row each) with one FAISS search per level
    for all their query vectors (per level and distinct limit: a search's depth is its
    limit, so each sentence gets exactly what it would alone)."""
    found: list[list[np.ndarray]] = [[] for _ in texts]  # per sentence: its found id lists
    for limit in sorted(set(limits)):
        which = [i for i, lim in enumerate(limits) if lim == limit]
        queries = [_level_queries(texts[i]) for i in which]
        for level in LEVEL_ORDER:
            vectors = [q[level] for q in queries]
            rows = build.top_videos(level, np.concatenate(vectors), limit)
            at = 0
            for i, v in zip(which, vectors, strict=True):
                found[i].extend(ids for ids, _, _ in rows[at : at + len(v)])
                at += len(v)
    return [_fuse(build, lists, limit) for lists, limit in zip(found, limits, strict=True)]


def _fuse(build: Build, found: list[np.ndarray], limit: int) -> list[int]:
    """One sentence's found id lists (best first) cut to ``limit`` by reciprocal rank fusion,
    in id order; only videos with rerank rows in ``build``."""
    if not found:
        return []
    weights = [1 / (RRF_K + np.arange(1, len(ids) + 1)) for ids in found]
    unique, which = np.unique(np.concatenate(found), return_inverse=True)
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
    return search_many(model, build, [query], [top_k], rerank, lap, cache)[0]


@torch.inference_mode()
def search_many(
    model: HANet,
    build: Build,
    queries: list[str],
    top_k: list[int],
    rerank: int = 200,
    lap: Callable[[str], None] = _no_lap,
    cache: QueryCache | None = None,
) -> list[list[Hit]]:
    """``search`` for several queries at once, each with its own ``top_k``: one text-branch
    batch for them all, one FAISS search per level for all their vectors, then each query's
    own rerank (its candidates' rows and scores: queries share few candidates, and scoring
    every query against the union measured slower). The same hits as one ``search`` per
    query. ``lap`` as in ``search``: text and ann once, the rest per query."""
    if cache is not None:
        texts = cache.encode_many(queries)
    else:
        texts = encode_queries(model, list(dict.fromkeys(queries)))
        texts = [texts[i] for i in _positions(queries)]
    lap("text")
    limits = [max(rerank, k) for k in top_k]
    found = candidates_many(build, texts, limits)
    lap("ann")
    return [
        rerank_hits(model, build, t, ids, k, lap)
        for t, ids, k in zip(texts, found, top_k, strict=True)
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
    top_k: int,
    lap: Callable[[str], None] = _no_lap,
) -> list[Hit]:
    """The ``top_k`` of the candidates ``ids`` for one sentence by HANet's fused score, each
    with its scores and moment."""
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

    def search_many(self, queries: list[tuple[str, int]]) -> list[list[Hit]]:
        """``search`` for several (query, top_k) at once (``service.search.search_many``),
        on one index build. Raises ``index.reader.BuildError`` as ``search`` does."""
        build = self.index.current()
        if build is None:
            return [[] for _ in queries]
        texts, top_k = [q for q, _ in queries], [k for _, k in queries]
        return search_many(self.model, build, texts, top_k, self.candidates, cache=self.cache)


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
