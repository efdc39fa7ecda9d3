"""Retrieval metrics, the paper's protocol (spec section 6)."""

from __future__ import annotations

import torch
from torch import Tensor

RECALLS = (1, 5, 10)


def best_positive_ranks(scores: Tensor, positives: Tensor) -> Tensor:
    """For each row (query), the 1-based rank of its best-scoring positive among all columns.
    Ties are counted against the query (a negative scoring the same as the best positive ranks
    above it), so a constant scorer cannot look good. scores, positives: (Q, C) -> (Q,) long."""
    if not bool(positives.any(1).all()):
        raise ValueError("every query needs at least one positive")
    best = scores.masked_fill(~positives, float("-inf")).max(dim=1, keepdim=True).values
    return 1 + ((scores >= best) & ~positives).sum(dim=1)


def summarize(ranks: Tensor) -> dict[str, float]:
    r = ranks.double()
    out = {f"R@{k}": round(100.0 * float((r <= k).double().mean()), 2) for k in RECALLS}
    # The reference's np.median (evaluation.py, eval_q2m): for an even count, the mean of the
    # two middle ranks (torch's median would take the lower one).
    out["MedR"] = float(r.quantile(0.5))
    out["MeanR"] = round(float(r.mean()), 2)
    return out


def retrieval_metrics(scores: Tensor, positives: Tensor) -> dict:
    """scores, positives: (num_texts, num_videos). Text-to-video ranks each caption's videos,
    video-to-text each video's captions; rsum = R@1 + R@5 + R@10 in both directions."""
    t2v = summarize(best_positive_ranks(scores, positives))
    v2t = summarize(best_positive_ranks(scores.T, positives.T))
    rsum = sum(t2v[f"R@{k}"] + v2t[f"R@{k}"] for k in RECALLS)
    return {"t2v": t2v, "v2t": v2t, "rsum": round(rsum, 2)}


def pairwise_accuracy(true_scores: Tensor, false_scores: Tensor) -> float:
    """Share of pairs where the true caption outscores its hard distractor (ties count as
    failures), in percent."""
    return round(100.0 * float((true_scores > false_scores).double().mean()), 2)


def positives_from_pairs(text_video: list[int], num_videos: int) -> Tensor:
    positives = torch.zeros(len(text_video), num_videos, dtype=torch.bool)
    positives[torch.arange(len(text_video)), torch.as_tensor(text_video)] = True
    return positives
