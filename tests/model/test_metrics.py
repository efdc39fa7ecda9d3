"""Retrieval metrics against rankings worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.metrics import best_positive_ranks, pairwise_accuracy, retrieval_metrics, summarize


def test_ranks_with_several_positives_and_ties() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.5, 0.7, 0.1],  # positive col 0 is best -> rank 1
            [0.9, 0.5, 0.7, 0.1],  # positive col 2 (0.7): only col 0 above -> rank 2
            [0.3, 0.3, 0.2, 0.1],  # positive col 1 ties with negative col 0 -> rank 2 (pessimistic)
            [0.4, 0.8, 0.6, 0.5],  # positives cols 2 and 3: best is 0.6, col 1 above -> rank 2
            [0.1, 0.2, 0.3, 0.4],  # positive col 0 is last -> rank 4
        ]
    )
    positives = torch.zeros(5, 4, dtype=torch.bool)
    for q, c in [(0, 0), (1, 2), (2, 1), (3, 2), (3, 3), (4, 0)]:
        positives[q, c] = True
    assert best_positive_ranks(scores, positives).tolist() == [1, 2, 2, 2, 4]


def test_constant_scores_rank_last() -> None:
    scores = torch.zeros(3, 3)
    assert best_positive_ranks(scores, torch.eye(3, dtype=torch.bool)).tolist() == [3, 3, 3]


def test_metrics_by_hand() -> None:
    # 3 videos; captions 0,1 -> video 0; caption 2 -> video 1; caption 3 -> video 2
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2],
            [0.1, 0.5, 0.2],
            [0.3, 0.8, 0.1],
            [0.7, 0.6, 0.5],
        ]
    )
    positives = torch.zeros(4, 3, dtype=torch.bool)
    for q, c in [(0, 0), (1, 0), (2, 1), (3, 2)]:
        positives[q, c] = True
    m = retrieval_metrics(scores, positives)
    # t2v ranks: [1, 3, 1, 3]; v2t: video 0 best caption 0 (0.9) -> 1; video 1: caption 2 (0.8)
    # -> 1; video 2: caption 3 (0.5), above it caption 0 (0.2)? no; caption 1 0.2, caption 2 0.1
    # -> rank 1. MedR of [1, 3, 1, 3]: the mean of the two middle ranks 1 and 3
    assert m["t2v"] == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MedR": 2.0, "MeanR": 2.0}
    assert m["v2t"]["R@1"] == 100.0 and m["v2t"]["MeanR"] == 1.0
    assert m["rsum"] == pytest.approx(50 + 100 + 100 + 300)


@pytest.mark.parametrize(
    "ranks", [[1, 2, 7, 9], [4, 1], [1, 2, 3], [5, 5, 6, 8, 1, 2], list(range(1, 101))]
)
def test_median_rank_is_numpys_median(ranks: list[int]) -> None:
    """Even counts average the two middle ranks (the reference takes np.median)."""
    m = summarize(torch.tensor(ranks))
    assert m["MedR"] == float(np.median(ranks))
    if len(ranks) % 2 == 0:  # not the lower middle value
        middle = sorted(ranks)[len(ranks) // 2 - 1 : len(ranks) // 2 + 1]
        assert m["MedR"] == sum(middle) / 2


def test_needs_a_positive_per_query() -> None:
    with pytest.raises(ValueError, match="positive"):
        best_positive_ranks(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))


def test_pairwise_accuracy() -> None:
    assert pairwise_accuracy(torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.4, 0.2, 0.9])) == 33.33
