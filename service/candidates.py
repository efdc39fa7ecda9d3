"""The search's candidate stage: the units to rerank for a sentence, from the three level
indexes and the concept lists (``index.concepts``), a few per video. A sentence's lists are
cut by an estimate of the score the rerank ranks by (``estimate``: the lists' own scores,
exact global and concept scores where the rows are in memory); vector queries ("more like
this", ``service.similar``) by reciprocal rank."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from index import concepts as concept_source
from index import rows as formats
from index.concepts import top_positions
from index.reader import Build
from index.vectors import video_of
from model import TextEmbeddings
from model.config import SCORE_NAMES
from model.scores import jaccard_one
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


@dataclass(frozen=True)
class Depth:
    """How deep a sentence's candidate stage reads (``HANET_SEARCH_LIST_DEPTH``,
    ``HANET_SEARCH_EXACT``). ``lists``: each list is read this many times deeper than the
    candidates wanted, for the union to be cut by estimated score (``estimate``): a unit low
    in one list and high in the others gets in. ``exact``: of the union, this many times the
    candidates wanted, estimated best from the lists, get the exact global and concept scores
    from their summaries (0: the whole union; cheap where the summaries are in memory)."""

    lists: int = 2
    exact: int = 5


def candidates(
    build: Build,
    text: TextEmbeddings,
    limit: int,
    videos: int = 0,
    among: np.ndarray | None = None,
    concepts: bool = True,
    weights: tuple[float, ...] | None = None,
    depth: Depth = Depth(),
) -> list[int]:
    """Up to ``limit`` units to rerank for one sentence: each level index (and each of the
    sentence's phrases there) and the concept lists (``concepts``: ``index.concepts``) return
    their best units, ``depth.lists`` times ``limit`` (more where videos have several:
    ``DEEPER``); the union is cut to ``limit`` by an estimate of the score the rerank ranks by
    (``weights``: its seven weights, ``model.scores.weights_of``; ``estimate``, exact scores
    for ``depth.exact`` times ``limit`` of them), at most
    ``UNITS_PER_VIDEO`` of one video, and longer where that many units hold fewer than
    ``videos`` videos (a search for the top videos). ``among``: units of these videos only (a
    filtered search). Without ``weights``, lists of ``limit`` fused by reciprocal rank."""
    return candidates_many(build, [text], [limit], [videos], [among], concepts, [weights], depth)[0]


def candidates_many(
    build: Build,
    texts: list[TextEmbeddings] | list[dict[str, np.ndarray]],
    limits: list[int],
    videos: list[int] | None = None,
    among: list[np.ndarray | None] | None = None,
    concepts: bool = True,
    weights: list[tuple[float, ...] | None] | None = None,
    depth: Depth = Depth(),
) -> list[list[int]]:
    """``candidates`` for several sentences (one row each; or level query vectors as
    ``_level_queries`` gives them, cut by reciprocal rank) with one FAISS search per level for
    all their query vectors (per level and distinct depth: each sentence gets exactly what it
    would alone; a filtered one is searched on its own)."""
    weights = [
        w if isinstance(t, TextEmbeddings) else None
        for t, w in zip(texts, weights or [None] * len(texts), strict=True)
    ]
    deeper = min(DEEPER, UNITS_PER_VIDEO, build.most_units())
    depths = [
        n * deeper * (1 if w is None else depth.lists) for n, w in zip(limits, weights, strict=True)
    ]
    found: list[list[Found]] = [[] for _ in texts]  # per sentence: its lists, best first
    among = among or [None] * len(texts)
    groups: dict[tuple[int, int], list[int]] = {}  # (depth, -1 or the filtered query) -> queries
    for i, (k, only) in enumerate(zip(depths, among, strict=True)):
        groups.setdefault((k, -1 if only is None else i), []).append(i)
    for (k, _), which in sorted(groups.items()):
        queries = [_vectors(texts[i]) for i in which]
        for level in LEVEL_ORDER:
            vectors = [q[level] for q in queries]
            rows = top_units(build, level, np.concatenate(vectors), k, among[which[0]])
            at = 0
            for i, v in zip(which, vectors, strict=True):
                found[i].extend(Found(level, ids, s) for ids, s, _ in rows[at : at + len(v)])
                at += len(v)
    for i, text in enumerate(texts if concepts else []):
        if isinstance(text, TextEmbeddings):
            probs = (text.verb_probs[0].float().numpy(), text.noun_probs[0].float().numpy())
            got = concept_source.top_units(build, *probs, depths[i], among[i])
            found[i].extend([] if got is None else [Found("concept", *got)])
    videos = videos or [0] * len(texts)
    out = []
    for i, lists in enumerate(found):
        unique, fused = (
            _reciprocal_rank(build, lists)
            if weights[i] is None
            else estimate(build, texts[i], lists, weights[i], limits[i] * depth.exact or None)
        )
        out.append(_cut(unique, fused, limits[i], videos[i]))
    return out


@dataclass(frozen=True)
class Found:
    """One candidate list: its source (a level, or "concept"), unit ids best first, and
    their scores there (a level: the cosine of the unit's best vector; concepts: the verb
    plus noun soft Jaccard over the lists)."""

    source: str
    ids: np.ndarray
    scores: np.ndarray


def _vectors(query: TextEmbeddings | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return query if isinstance(query, dict) else _level_queries(query)


def _reciprocal_rank(build: Build, found: list[Found]) -> tuple[np.ndarray, np.ndarray]:
    """The union of the lists' known units (ascending) and their reciprocal rank fusion."""
    if not found:
        return np.zeros(0, np.int64), np.zeros(0)
    weights = [1 / (RRF_K + np.arange(1, len(f.ids) + 1)) for f in found]
    unique, which = np.unique(np.concatenate([f.ids for f in found]), return_inverse=True)
    fused = np.bincount(which, weights=np.concatenate(weights), minlength=len(unique))
    known = build.known(unique)  # only units with rerank rows in this build
    return unique[known], fused[known]


def estimate(
    build: Build,
    text: TextEmbeddings,
    found: list[Found],
    weights: tuple[float, ...],
    shortlist: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The union of the lists' known units (ascending) and an estimate of each one's
    weighted score (``weights``, in ``SCORE_NAMES`` order), from what is at hand without the
    rerank's rows: each level's list score for a level's two scores (the mean over the
    sentence's phrases there; a unit a list did not return gets that list's lowest score, an
    upper bound), the concept lists' for the concept scores. The ``shortlist`` units
    estimated best (all when None) then get the exact global and concept scores from their
    rows instead (each unit's summary, read cold too: ``_exact_parts``) and rank before the
    rest."""
    listed = [f for f in found if len(f.ids)]
    ids = np.concatenate([f.ids for f in listed]) if listed else np.zeros(0, np.int64)
    unique, which = np.unique(ids, return_inverse=True)
    w = dict(zip(SCORE_NAMES, weights, strict=True))
    per_source = {  # the weight of what each list's score stands in for
        "event": w["global"],
        "action": (w["local_action"] + w["individual_action"]) * bool(text.verb_mask[0].any()),
        "entity": (w["local_entity"] + w["individual_entity"]) * bool(text.arg_mask[0].any()),
        "concept": (w["concept_verb"] + w["concept_noun"]) / 2,
    }
    count = Counter(f.source for f in listed)
    weight = [per_source[f.source] / count[f.source] for f in listed]
    lowest = [float(f.scores.min()) for f in listed]
    of = np.repeat(np.arange(len(listed)), [len(f.ids) for f in listed])  # each entry's list
    scores = np.concatenate([f.scores for f in listed]) if listed else np.zeros(0)
    above = (scores - np.take(lowest, of)) * np.take(weight, of) if listed else scores
    parts = {}  # every list's lowest score for every unit, plus what the lists holding it add
    for source in (*_EXACT, None):  # the lists the rows' scores can replace, then the rest
        chosen = [i for i, f in enumerate(listed) if _group(f.source) == source]
        base = sum(weight[i] * lowest[i] for i in chosen)
        entries = np.isin(of, chosen)
        parts[source] = base + np.bincount(which[entries], above[entries], len(unique))
    known = build.known(unique)
    unique, parts = unique[known], {k: v[known] for k, v in parts.items()}
    fused = sum(parts.values())
    best = np.arange(len(unique)) if shortlist is None else top_positions(fused, shortlist)
    exact = _exact_parts(build, text, unique[best]) if len(best) else {}
    if exact:
        fused -= _LATER  # below every shortlisted unit
        fused[best] = parts[None][best]
        for source, names in _EXACT.items():
            got = [w[n] * exact[n] for n in names if n in exact]
            fused[best] += sum(got) if got else parts[source][best]
    return unique, fused


_EXACT = {"event": ("global",), "concept": ("concept_verb", "concept_noun")}  # lists -> scores
_LATER = 1e3  # more than any fused score's range


def _group(source: str) -> str | None:
    return source if source in _EXACT else None


def _exact_parts(build: Build, text: TextEmbeddings, units: np.ndarray) -> dict:
    """The global and concept scores of ``units`` from their stored rows (a FAISS build on
    disk; else none): read from memory, or read cold, their summaries only (the global
    vector and the probabilities: ``index.rows.SUMMARY``; parts written before summaries:
    the probabilities' own files, the global vectors being inside the records)."""
    if not isinstance(build, Build) or not build.parts:
        return {}
    where, parts = build.where(units.tolist()), build.parts
    if build.paging.cold:  # summaries, or an older part's files of these fields
        parts, where = build.paging.read(parts, where, only=formats.SUMMARY_FILES)
    used = [parts[p] for p in np.unique(where[:, 0]).tolist()]
    video = {
        n: formats.gather_decoded(parts, n, where)
        for n in _EXACT_FIELDS
        if all(n in part for part in used)
    }
    out = {}
    if "global_" in video:
        out["global"] = (video["global_"].float() @ text.global_[0].float()).numpy()
    for name, field, probs in (
        ("concept_verb", "verb_probs", text.verb_probs),
        ("concept_noun", "noun_probs", text.noun_probs),
    ):
        if field in video:
            out[name] = jaccard_one(probs[0].float(), video[field]).numpy()
    return out


_EXACT_FIELDS = ("global_", "verb_probs", "noun_probs")


def _cut(unique: np.ndarray, fused: np.ndarray, limit: int, wanted: int = 0) -> list[int]:
    """Units (ascending) and their fused scores cut to ``limit``, best first, at most
    ``UNITS_PER_VIDEO`` per video, then the best unit of each further video until ``wanted``
    videos are in, in id order."""
    if not len(unique):
        return []
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
