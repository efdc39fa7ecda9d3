"""More like this: a video (or a stretch of it) as the query instead of a sentence.

The video branch's stored embeddings of the source video are the query vectors: its units'
event vectors against the event index, their key action segments against the action index,
their key entity segments against the entity index; the candidates are fused by rank as a
sentence's are (``service.candidates.candidates_many``), then ranked by cosine similarity per level,
averaged (HANet's rerank scores a sentence against a video, so it cannot rank video against
video). The source video itself is never a hit."""

from __future__ import annotations

import numpy as np
import torch

from index.vectors import video_of
from model import HANet, VideoEmbeddings
from model.preprocess import frames_to_pixels
from service.candidates import candidates_many
from service.search import Hit, Moment, Query, group_units, stretch_in_unit


class UnknownVideo(LookupError):
    """The query's video is not in the published index."""


class EmptyStretch(ValueError):
    """The query's stretch (start_s..end_s) holds none of the video's segments."""


LEVEL_SCORES = ("event", "action", "entity")
QUERY_UNITS = 16  # a long video queries with this many of its units at most


def similar(build, query: Query, rerank: int = 200) -> list[Hit]:
    """The ``query.top_k`` videos (or moments) most like ``query.like``'s video, best first,
    among ``query.videos`` when given; the source video left out."""
    like = query.like
    units = build.units(like.video_id)
    if not units:
        raise UnknownVideo(f"video {like.video_id} is not in the index (unknown or not indexed)")
    source = build.embeddings(units)
    keep = _in_stretch(build, units, source, like.start_s, like.end_s)
    if not keep.any():
        last = build.span(units[-1])[1]
        raise EmptyStretch(f"video {like.video_id} has no segment in that stretch (0..{last} s)")
    vectors = _query_vectors(source, keep)
    return ranked(build, vectors, query, rerank, exclude=like.video_id, extra=len(units))


def image_vectors(model: HANet, image: np.ndarray) -> dict[str, np.ndarray]:
    """Level query vectors of one image (H, W, 3) uint8: the image as a one-frame video
    through the video branch (the image tower, then the heads): its event vector, key action
    segments and key entity segments."""
    pixels = frames_to_pixels(image[None], model.preprocess)  # (1, 3, S, S)
    with torch.inference_mode():
        video = model.encode_video(pixels[None], torch.ones(1, 1, dtype=torch.bool))
    return _query_vectors(video, np.ones(video.action_spans.shape[:2], bool))


def ranked(
    build, vectors: dict[str, np.ndarray], query: Query, rerank: int, exclude=None, extra=0
) -> list[Hit]:
    """The ``query.top_k`` videos (or moments) best matching level query ``vectors`` among
    ``query.videos`` (all when None), ``exclude`` (a video id) left out."""
    wanted = query.top_k + 1 if query.group_by == "video" else 0
    limit = max(rerank, query.top_k) + extra
    found = candidates_many(build, [vectors], [limit], [wanted], [query.videos])[0]
    found = [u for u in found if video_of(u) != exclude]
    if not found:
        return []
    rows = build.embeddings(found)
    scores, best = _scores(vectors, rows)
    order = torch.as_tensor(scores["fused"]).argsort(descending=True).tolist()
    groups = group_units(order, video_of(np.asarray(found, np.int64)), query)
    return [_hit(build, found, rows, scores, best, group) for group in groups]


def _in_stretch(
    build, units: list[int], source: VideoEmbeddings, start_s: float | None, end_s: float | None
) -> np.ndarray:
    """(U, Sa) bool: the source's action segments that lie in [start_s, end_s] (all of them
    without a stretch)."""
    spans = source.action_spans.numpy()  # (U, Sa, 2) frame indexes
    if start_s is None and end_s is None:
        return np.ones(spans.shape[:2], bool)
    lo, hi = start_s or 0.0, end_s if end_s is not None else np.inf
    keep = np.zeros(spans.shape[:2], bool)
    for j, unit in enumerate(units):
        first, last = build.span(unit)
        if last < lo or first > hi:
            continue
        times = build.frame_times(unit)
        for s, (a, b) in enumerate(spans[j]):
            a, b = min(a, len(times) - 1), min(b, len(times) - 1)
            keep[j, s] = times[b] >= lo and times[a] <= hi
        if not keep[j].any():  # a stretch shorter than any segment of the unit: the unit's
            keep[j] = True
    return keep


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1).numpy()


def _query_vectors(source: VideoEmbeddings, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Level query vectors: the kept units' event vectors, their kept action segments, their
    entity segments; of at most ``QUERY_UNITS`` units, evenly spread (a long video)."""
    chosen = np.flatnonzero(keep.any(1))
    if len(chosen) > QUERY_UNITS:
        chosen = chosen[np.linspace(0, len(chosen) - 1, QUERY_UNITS).round().astype(int)]
    units = np.zeros(len(keep), bool)
    units[chosen] = True
    keep = keep & units[:, None]
    return {
        "event": _unit(source.global_[torch.from_numpy(units)]),
        "action": _unit(source.action_segments[torch.from_numpy(keep)]),
        "entity": _unit(source.entity_segments[torch.from_numpy(units)].flatten(0, 1)),
    }


def _scores(
    query: dict[str, np.ndarray], rows: VideoEmbeddings
) -> tuple[dict[str, list[float]], np.ndarray]:
    """Per candidate unit: the event score (best cosine to a source event vector), the action
    and entity scores (each source segment's best cosine among the unit's segments, averaged),
    their mean ("fused"); and the unit's action segment that matched best."""
    event = (_unit(rows.global_) @ query["event"].T).max(1)  # (C,)
    action = _unit(rows.action_segments) @ query["action"].T  # (C, Sa, Qa)
    entity = _unit(rows.entity_segments) @ query["entity"].T  # (C, Se, Qe)
    levels = {"event": event, "action": action.max(1).mean(1), "entity": entity.max(1).mean(1)}
    levels["fused"] = np.mean([levels[k] for k in LEVEL_SCORES], axis=0)
    best = action.max(2).argmax(1)  # (C,)
    return {k: v.astype(np.float64).tolist() for k, v in levels.items()}, best


def _hit(build, units, rows, scores, best, group: list[int]) -> Hit:
    moments = tuple(_moment(build, units[i], rows, i, int(best[i]), scores) for i in group)
    top = moments[0]
    return Hit(
        video_id=int(video_of(units[group[0]])),
        score=top.score,
        scores=top.scores,
        start_s=top.start_s,
        end_s=top.end_s,
        moments=moments,
    )


def _moment(build, unit: int, rows: VideoEmbeddings, i: int, segment: int, scores) -> Moment:
    """A candidate unit's moment: its best-matching action segment, in seconds."""
    first, last = build.span(unit)
    valid = int(rows.frame_mask[i].sum())
    a, b = rows.action_spans[i, segment].tolist()
    start_s, end_s = stretch_in_unit(build.frame_times(unit)[:valid], a, b, (first, last))
    return Moment(
        start_s=start_s,
        end_s=end_s,
        score=scores["fused"][i],
        scores={k: round(v[i], 4) for k, v in scores.items()},
        segment_start_s=round(first, 3),
        segment_end_s=round(last, 3),
    )
