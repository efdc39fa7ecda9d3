"""A candidate source over concepts: the units whose stored verb and noun probabilities best
match a sentence's, by the soft Jaccard score HANet's concept level gives them.

The three level indexes nominate candidates by embedding similarity only, while the concept
scores carry half of the fused weight: a unit whose concepts match and whose vectors are only
close would never be reranked. This list is fused with the levels' (``service.candidates``).

Inverted lists, per part and per field (verbs, nouns): each unit is listed under its
``TOP_CONCEPTS`` most probable concepts, with its probability there, beside its exact sum
over all concepts. A sentence's ``QUERY_CONCEPTS`` most probable concepts gather their lists;
a unit's min-sum is what those shared concepts give (what it puts outside its listed
concepts is left out), and its soft Jaccard min-sum / (sum p + sum q - min-sum) is exact in
the sums. The work is the gathered lists' length, which falls as the vocabulary grows (a
concept's list holds about units x TOP_CONCEPTS / vocabulary entries), not a pass over
units x vocabulary. Lists are made once per part file (parts never change), when a build is
read (``index.live``) or else first searched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from index import rows as formats
from index.reader import Build
from index.vectors import video_of

FIELDS = ("verb_probs", "noun_probs")
TOP_CONCEPTS = 16  # the concepts each unit is listed under, per field
QUERY_CONCEPTS = 16  # the sentence's concepts whose lists are read, per field
CHUNK = 1 << 16  # rows read at once while the lists are made: bounded temporaries


@dataclass
class _Lists:
    """One part's inverted lists for one field: list ``c`` is ``rows[starts[c]:starts[c+1]]``
    with ``probs`` beside; ``sums`` every row's probability sum over all concepts."""

    rows: np.ndarray  # (E,) int32 row numbers, by concept
    probs: np.ndarray  # (E,) float32
    starts: np.ndarray  # (K + 1,) int64
    sums: np.ndarray  # (N,) float32

    @classmethod
    def of(cls, stored: np.ndarray) -> _Lists:
        count, vocab = stored.shape
        keep = min(TOP_CONCEPTS, vocab)
        concepts, probs, sums = [], [], []
        for start in range(0, count if keep else 0, CHUNK):  # no vocabulary: empty lists
            p = _decoded(stored[start : start + CHUNK])
            top = np.argpartition(-p, keep - 1, axis=1)[:, :keep] if keep < vocab else None
            top = np.broadcast_to(np.arange(vocab), p.shape) if top is None else top
            concepts.append(top)
            probs.append(np.take_along_axis(p, top, 1))
            sums.append(p.sum(1))
        concept = np.concatenate(concepts).reshape(-1) if concepts else np.zeros(0, np.int64)
        prob = np.concatenate(probs).reshape(-1) if probs else np.zeros(0, np.float32)
        order = np.argsort(concept, kind="stable")  # by concept, rows ascending within one
        starts = np.r_[0, np.cumsum(np.bincount(concept, minlength=vocab))]
        rows = (order // max(keep, 1)).astype(np.int32)
        sums_ = np.concatenate(sums) if sums else np.zeros(count, np.float32)
        return cls(rows, prob[order], starts, sums_)

    def min_sums(self, query: np.ndarray, count: int) -> np.ndarray:
        """(N,) each row's min-sum with ``query`` over the query's listed concepts."""
        wanted = np.argsort(-query, kind="stable")[:QUERY_CONCEPTS]
        wanted = wanted[query[wanted] > 0]
        if not len(wanted):
            return np.zeros(count, np.float32)
        low = torch.zeros(count)  # torch's index_add_ in float32: faster than np.bincount
        rows, probs = torch.from_numpy(self.rows), torch.from_numpy(self.probs)
        for c in wanted.tolist():
            a, b = int(self.starts[c]), int(self.starts[c + 1])
            low.index_add_(0, rows[a:b], probs[a:b].clamp(max=float(query[c])))
        return low.numpy()


def _decoded(stored: np.ndarray) -> np.ndarray:
    """Probabilities as ``index.rows.decode`` gives them (uint8 levels in int8 parts, float16
    in float16 parts), float32."""
    probs = np.asarray(stored, np.float32)
    return probs / np.float32(formats.PROB_LEVELS) if stored.dtype == np.uint8 else probs


_FILES = (formats.SUMMARY, FIELDS[0])  # the file holding a part's probabilities
# Lists made per part file, by the file's identity (parts are never rewritten, later versions
# hard-link them) or, for a build not read from its files (a writer's), by the array's: only
# the parts of the build prepared last are kept.
_MADE: dict[object, tuple[np.ndarray, dict[str, _Lists]]] = {}
_MADE_LOCK = threading.Lock()


class _Parts:
    """What a build's searches need: each part's rows' live units (-1: a deleted or re-indexed
    unit's row) and its lists per field."""

    def __init__(self, build: Build) -> None:
        self.units = [np.full(len(part[FIELDS[0]]), -1, np.int64) for part in build.parts]
        ids = np.fromiter(build.rows.keys(), np.int64, len(build.rows))
        where = np.fromiter(chain.from_iterable(build.rows.values()), np.int64, 2 * len(ids))
        where = where.reshape(-1, 2)
        for p, units in enumerate(self.units):
            at = where[:, 0] == p
            units[where[at, 1]] = ids[at]
        names = build.manifest.get("parts", [])
        with _MADE_LOCK:
            kept, self.lists = {}, []
            for p, part in enumerate(build.parts):
                stored = part[FIELDS[0]]
                files = [f"parts/{names[p]}/{f}.npy" for f in _FILES] if p < len(names) else []
                file = next((build.file_ids[f] for f in files if f in build.file_ids), None)
                key = (file or id(stored), TOP_CONCEPTS)
                made = _MADE.get(key)
                if made is None or (isinstance(key[0], int) and made[0] is not stored):
                    made = (stored, {f: _Lists.of(part[f]) for f in FIELDS})
                kept[key] = made
                self.lists.append(made[1])
            _MADE.clear()
            _MADE.update(kept)


def prepare(build: Build) -> None:
    """Make ``build``'s lists now (a new build, in the background) rather than at its first
    search; nothing for other builds."""
    if isinstance(build, Build) and build.parts:
        _parts(build)


def _parts(build: Build) -> _Parts:
    cached = build.__dict__.get("_concept_parts")
    if cached is None or cached[0] is not build.rows or cached[1] != len(build.rows):
        cached = (build.rows, len(build.rows), _Parts(build))
        build.__dict__["_concept_parts"] = cached
    return cached[2]


def top_units(
    build: object, verbs: np.ndarray, nouns: np.ndarray, k: int, videos: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``k`` live units of ``build`` with the highest verb plus noun soft Jaccard against
    one sentence's probabilities (``verbs`` (Kv,), ``nouns`` (Kn,)) over the inverted lists,
    best first (ties by id), units that share none of its listed concepts left out; among the
    units of ``videos`` only when given: (unit ids, their scores). None where there is nothing
    to search: a build that is not a FAISS build on disk (Milvus), a model without a concept
    vocabulary, or a sentence that names no concept."""
    if not isinstance(build, Build) or not build.parts or k < 1:
        return None
    query = {f: np.asarray(q, np.float32) for f, q in zip(FIELDS, (verbs, nouns), strict=True)}
    if not all(q.size for q in query.values()) or not any(q.sum() > 0 for q in query.values()):
        return None
    parts = _parts(build)
    found, scores = [], []
    for p, units in enumerate(parts.units):
        score = np.zeros(len(units), np.float32)
        for f, q in query.items():  # soft Jaccard: min-sum / (sum p + sum q - min-sum)
            lists = parts.lists[p][f]
            low = lists.min_sums(q, len(units))
            score += low / np.maximum(lists.sums + q.sum() - low, 1e-6)
        keep = (score > 0) & (units >= 0)  # a listed concept shared, and live
        if videos is not None:
            keep &= np.isin(video_of(units), videos)
        at = np.flatnonzero(keep)
        top = at[top_positions(score[at], k)]
        found.append(units[top])
        scores.append(score[top])
    units, score = np.concatenate(found), np.concatenate(scores)
    order = np.lexsort((units, -score))[:k]
    return units[order], score[order]


def top_positions(score: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores (any order)."""
    if len(score) <= k:
        return np.arange(len(score))
    return np.argpartition(-score, k - 1)[:k]
