"""The search's candidate stage: the units to rerank for a sentence, from the three level
indexes (and the concept lists, ``index.concepts``) fused by reciprocal rank, a few per video."""

from __future__ import annotations

import numpy as np

from index import concepts as concept_source
from index.reader import Build
from index.vectors import video_of
from model import TextEmbeddings
from service.filters import top_units


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


RRF_K = 60  # reciprocal rank fusion's usual constant
LEVEL_ORDER = ("event", "action", "entity")  # as _level_queries gives them
# Candidate units one video may take, so that a long video's many segments cannot crowd every
# other video out of the rerank; the level indexes are searched that much deeper (at most
# DEEPER times) where videos have several units, so that the others still fill the budget.
UNITS_PER_VIDEO = 8
DEEPER = 4


def candidates(
    build: Build,
    text: TextEmbeddings,
    limit: int,
    videos: int = 0,
    among: np.ndarray | None = None,
    concepts: bool = True,
) -> list[int]:
    """Up to ``limit`` units to rerank for one sentence: each level index (and each of the
    sentence's phrases there) returns its best ``limit`` units (more where videos have several:
    ``DEEPER``); the union is cut to ``limit`` by reciprocal rank fusion (a unit ranked high at
    any level stays in), at most ``UNITS_PER_VIDEO`` of one video, and longer where that many
    units hold fewer than ``videos`` videos (a search for the top videos). ``among``: units of
    these videos only (a filtered search). ``concepts``: the concept lists' best units are a
    further list (``index.concepts``)."""
    return candidates_many(build, [text], [limit], [videos], [among], concepts)[0]


def candidates_many(
    build: Build,
    texts: list[TextEmbeddings] | list[dict[str, np.ndarray]],
    limits: list[int],
    videos: list[int] | None = None,
    among: list[np.ndarray | None] | None = None,
    concepts: bool = True,
) -> list[list[int]]:
    """``candidates`` for several sentences (one row each; or level query vectors as
    ``_level_queries`` gives them) with one FAISS search per level for all their query vectors
    (per level and distinct limit: a search's depth is its limit, so each sentence gets
    exactly what it would alone; a filtered one is searched on its own). With ``concepts``, a
    sentence's best units by concept score are a further list (``index.concepts``)."""
    found: list[list[np.ndarray]] = [[] for _ in texts]  # per sentence: its found id lists
    deeper = min(DEEPER, UNITS_PER_VIDEO, build.most_units())
    among = among or [None] * len(texts)
    groups: dict[tuple[int, int], list[int]] = {}  # (limit, -1 or the filtered query) -> queries
    for i, (limit, only) in enumerate(zip(limits, among, strict=True)):
        groups.setdefault((limit, -1 if only is None else i), []).append(i)
    for (limit, _), which in sorted(groups.items()):
        queries = [_vectors(texts[i]) for i in which]
        for level in LEVEL_ORDER:
            vectors = [q[level] for q in queries]
            rows = top_units(build, level, np.concatenate(vectors), limit * deeper, among[which[0]])
            at = 0
            for i, v in zip(which, vectors, strict=True):
                found[i].extend(ids for ids, _, _ in rows[at : at + len(v)])
                at += len(v)
    for i, text in enumerate(texts if concepts else []):
        if isinstance(text, TextEmbeddings):
            probs = (text.verb_probs[0].float().numpy(), text.noun_probs[0].float().numpy())
            ids = concept_source.top_units(build, *probs, limits[i] * deeper, among[i])
            found[i].extend([] if ids is None else [ids])
    videos = videos or [0] * len(texts)
    return [
        _fuse(build, lists, limit, wanted)
        for lists, limit, wanted in zip(found, limits, videos, strict=True)
    ]


def _vectors(query: TextEmbeddings | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return query if isinstance(query, dict) else _level_queries(query)


def _fuse(build: Build, found: list[np.ndarray], limit: int, wanted: int = 0) -> list[int]:
    """One sentence's found unit id lists (best first) cut to ``limit`` by reciprocal rank
    fusion, at most ``UNITS_PER_VIDEO`` per video, then the best unit of each further video
    until ``wanted`` videos are in, in id order; only units with rerank rows in ``build``."""
    if not found:
        return []
    weights = [1 / (RRF_K + np.arange(1, len(ids) + 1)) for ids in found]
    unique, which = np.unique(np.concatenate(found), return_inverse=True)
    fused = np.bincount(which, weights=np.concatenate(weights), minlength=len(unique))  # in order
    known = build.known(unique)  # only units with rerank rows in this build
    unique, fused = unique[known], fused[known]
    order = np.lexsort((unique, -fused))  # highest first, ties by id
    ranked = unique[order]
    videos = video_of(ranked)
    # each unit's place among its video's units, in this order: keep the first few per video
    by_video = np.argsort(videos, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(videos[by_video])) + 1]
    place = np.empty(len(ranked), np.int64)
    place[by_video] = np.arange(len(ranked)) - np.repeat(
        starts, np.diff(np.r_[starts, len(ranked)])
    )
    kept = ranked[place < UNITS_PER_VIDEO]
    chosen, rest = kept[:limit], kept[limit:]
    have = len(np.unique(video_of(chosen)))
    if have < wanted and len(rest):  # the first unit of each video not in yet, best first
        new = ~np.isin(video_of(rest), video_of(chosen))
        rest = rest[new]
        _, first = np.unique(video_of(rest), return_index=True)
        chosen = np.concatenate([chosen, rest[np.sort(first)][: wanted - have]])
    return sorted(chosen.tolist())
