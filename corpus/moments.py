"""Moment retrieval metrics, as TVR (Lei et al., 2020) reports them; NumPy only, no model.

Each of the Q queries has one true moment (v_q, s_q, e_q): a video id and a span in seconds.
A system answers with a ranked list of moments (video id, start_s, end_s) over the whole corpus,
or with one span predicted in the true video, or both:

- corpus moment retrieval: the first hit is at rank
  r_q = min{k : v_k = v_q and IoU((s_k, e_k), (s_q, e_q)) >= t} (infinite when there is none);
  R@K at IoU >= t = 100 * |{q : r_q <= K}| / Q.
- video retrieval read from the same list: videos in the order of their first moment, each
  once; with n_q the rank of v_q (infinite when absent), R@K = 100 * |{q : n_q <= K}| / Q and
  MedR the median of the n_q (NumPy's: the mean of the two middle ones for an even Q).
- localisation in the true video: with IoU_q that of the predicted span,
  mIoU = 100 * mean_q IoU_q and R@1 at IoU >= t = 100 * |{q : IoU_q >= t}| / Q.

Temporal IoU of spans a = (s_a, e_a) and b = (s_b, e_b):
    inter = max(0, min(e_a, e_b) - max(s_a, s_b)),  union = (e_a - s_a) + (e_b - s_b) - inter,
    IoU = inter / union; two zero-length spans (union 0) have IoU 1 at the same time, else 0.
Thresholds are compared with a tolerance of 1e-9, so that an IoU meant to be exactly 0.5 or 0.7
is not lost to rounding. Percentages are not rounded, except in ``moment_report``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

Moment = tuple[str, float, float]  # video id, start_s, end_s
RECALLS = (1, 5, 10)
IOU_THRESHOLDS = (0.5, 0.7)
_TOLERANCE = 1e-9


def temporal_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """IoU of spans, broadcast: (..., 2) and (..., 2) -> (...). Spans ending before they start
    are a ValueError."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[-1:] != (2,) or b.shape[-1:] != (2,):
        raise ValueError(f"spans must have shape (..., 2), got {a.shape} and {b.shape}")
    if (a[..., 1] < a[..., 0]).any() or (b[..., 1] < b[..., 0]).any():
        raise ValueError("a span ends before it starts")
    inter = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    same_point = (a[..., 0] == b[..., 0]).astype(np.float64)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same_point)


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal IoU of two (start, end) spans."""
    return float(temporal_iou(a, b))


def _check(truth: Sequence[Moment], answers: Sequence) -> None:
    if not truth:
        raise ValueError("no queries")
    if len(answers) != len(truth):
        raise ValueError(f"{len(truth)} queries but {len(answers)} answers")


def first_hit_ranks(
    truth: Sequence[Moment], ranked: Sequence[Sequence[Moment]], threshold: float
) -> np.ndarray:
    """(Q,) 1-based rank of each query's first moment in its true video with IoU >= threshold;
    inf where the list has none."""
    _check(truth, ranked)
    ranks = np.full(len(truth), np.inf)
    for q, ((video, start, end), moments) in enumerate(zip(truth, ranked, strict=True)):
        spans = [(s, e) for v, s, e in moments if v == video]
        if not spans:
            continue
        positions = np.array([k for k, (v, _, _) in enumerate(moments) if v == video])
        good = temporal_iou(np.asarray(spans), (start, end)) >= threshold - _TOLERANCE
        if good.any():
            ranks[q] = positions[good][0] + 1
    return ranks


def video_ranks(truth: Sequence[Moment], ranked: Sequence[Sequence[Moment]]) -> np.ndarray:
    """(Q,) 1-based rank of each query's true video among the videos of its list, each video
    counted once, at its first moment; inf where the video is not in the list."""
    _check(truth, ranked)
    ranks = np.full(len(truth), np.inf)
    for q, ((video, _, _), moments) in enumerate(zip(truth, ranked, strict=True)):
        order = list(dict.fromkeys(v for v, _, _ in moments))
        if video in order:
            ranks[q] = order.index(video) + 1
    return ranks


def recall_at(ranks: np.ndarray, ks: Sequence[int] = RECALLS) -> dict[str, float]:
    """{"R@K": 100 * share of ranks <= K} for each K."""
    return {f"R@{k}": 100.0 * float(np.mean(ranks <= k)) for k in ks}


def median_rank(ranks: np.ndarray) -> float | None:
    """The median rank, NumPy's (as ``model.metrics``: the mean of the two middle ranks for an
    even count); None when a query whose video was never ranked (infinite) is in the middle."""
    middle = float(np.median(ranks))
    return None if np.isinf(middle) else middle


def corpus_moment_recall(
    truth: Sequence[Moment],
    ranked: Sequence[Sequence[Moment]],
    ks: Sequence[int] = RECALLS,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[str, dict[str, float]]:
    """{"IoU>=t": {"R@K": percent}}: corpus moment retrieval, a hit within the first K."""
    return {f"IoU>={t}": recall_at(first_hit_ranks(truth, ranked, t), ks) for t in thresholds}


def video_recall(
    truth: Sequence[Moment], ranked: Sequence[Sequence[Moment]], ks: Sequence[int] = RECALLS
) -> dict:
    """{"R@K": percent, "MedR": median rank or None, "found": queries whose video is in
    their list}: video retrieval read from ranked moments."""
    ranks = video_ranks(truth, ranked)
    return {
        **recall_at(ranks, ks),
        "MedR": median_rank(ranks),
        "found": int(np.isfinite(ranks).sum()),
    }


def localisation(
    truth: Sequence[Moment],
    predicted: Sequence[tuple[float, float]],
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict:
    """{"mIoU": percent, "R@1": {"IoU>=t": percent}}: one predicted span per query, in its
    true video."""
    _check(truth, predicted)
    ious = temporal_iou(np.asarray(predicted, dtype=np.float64), [(s, e) for _, s, e in truth])
    return {
        "mIoU": 100.0 * float(ious.mean()),
        "R@1": {f"IoU>={t}": 100.0 * float(np.mean(ious >= t - _TOLERANCE)) for t in thresholds},
    }


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 2) if isinstance(value, float) else value


def moment_report(
    truth: Sequence[Moment],
    ranked: Sequence[Sequence[Moment]] | None = None,
    localised: Sequence[tuple[float, float]] | None = None,
    ks: Sequence[int] = RECALLS,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict:
    """Every metric the answers allow, as one JSON-able dict (percentages to 2 decimals):
    ``queries``, ``videos`` (distinct true videos), then ``corpus`` and ``video`` from the
    ranked lists with ``listed`` (their mean length), and ``localisation`` from the spans."""
    if not truth:
        raise ValueError("no queries")
    report: dict = {"queries": len(truth), "videos": len({v for v, _, _ in truth})}
    if ranked is not None:
        report["corpus"] = corpus_moment_recall(truth, ranked, ks, thresholds)
        report["listed"] = float(np.mean([len(m) for m in ranked]))
        report["video"] = video_recall(truth, ranked, ks)
    if localised is not None:
        report["localisation"] = localisation(truth, localised, thresholds)
    return _rounded(report)
