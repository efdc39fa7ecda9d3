"""Moment retrieval metrics against hand-computed values, a brute-force oracle and edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corpus.moments import (
    corpus_moment_recall,
    first_hit_ranks,
    iou,
    localisation,
    median_rank,
    moment_report,
    temporal_iou,
    video_ranks,
    video_recall,
)


def test_iou_by_hand() -> None:
    assert iou((0, 10), (5, 15)) == pytest.approx(1 / 3)  # 5 / 15
    assert iou((0, 10), (0, 7)) == 0.7
    assert iou((2, 4), (0, 8)) == 0.25  # inside: 2 / 8
    assert iou((0, 8), (2, 4)) == 0.25  # symmetric
    assert iou((0, 2), (3, 5)) == 0.0  # apart
    assert iou((0, 2), (2, 4)) == 0.0  # touching
    assert iou((1.5, 3.5), (1.5, 3.5)) == 1.0


def test_iou_of_zero_length_spans() -> None:
    assert iou((3, 3), (3, 3)) == 1.0  # the same instant
    assert iou((3, 3), (4, 4)) == 0.0
    assert iou((3, 3), (0, 10)) == 0.0  # an instant inside a span covers none of it
    assert iou((0, 10), (10, 10)) == 0.0


def test_iou_broadcasts_and_refuses_bad_spans() -> None:
    got = temporal_iou([[0, 10], [5, 15], [20, 30]], [0, 10])
    np.testing.assert_allclose(got, [1.0, 1 / 3, 0.0])
    assert temporal_iou(np.zeros((2, 3, 2)), np.ones((3, 2))).shape == (2, 3)
    with pytest.raises(ValueError, match="ends before"):
        iou((5, 4), (0, 10))
    with pytest.raises(ValueError, match="shape"):
        temporal_iou([1, 2, 3], [0, 1])


# Four queries; their lists hold hits at known ranks (worked out in the comments).
TRUTH = [("a", 0.0, 10.0), ("b", 10.0, 20.0), ("c", 0.0, 4.0), ("a", 20.0, 30.0)]
RANKED = [
    [("a", 0.0, 10.0)],  # IoU 1 at rank 1; video a at rank 1
    [  # IoU 0.6 at rank 2, IoU 0.8 at rank 7; video b at rank 2 (after a)
        ("a", 10.0, 20.0),
        ("b", 10.0, 16.0),
        ("d", 0.0, 1.0),
        ("d", 1.0, 2.0),
        ("e", 0.0, 1.0),
        ("e", 1.0, 2.0),
        ("b", 10.0, 18.0),
    ],
    [(f"v{i}", 0.0, 4.0) for i in range(10)] + [("c", 0.0, 4.0)],  # rank 11; video rank 11
    [  # IoU 0.7 exactly at rank 6; video a at rank 2 (its first moment misses)
        ("b", 0.0, 1.0),
        ("a", 0.0, 10.0),
        ("b", 5.0, 6.0),
        ("c", 0.0, 1.0),
        ("c", 1.0, 2.0),
        ("a", 20.0, 27.0),
    ],
]


def test_corpus_moment_retrieval_by_hand() -> None:
    np.testing.assert_array_equal(first_hit_ranks(TRUTH, RANKED, 0.5), [1, 2, 11, 6])
    np.testing.assert_array_equal(first_hit_ranks(TRUTH, RANKED, 0.7), [1, 7, 11, 6])
    assert corpus_moment_recall(TRUTH, RANKED) == {
        "IoU>=0.5": {"R@1": 25.0, "R@5": 50.0, "R@10": 75.0},
        "IoU>=0.7": {"R@1": 25.0, "R@5": 25.0, "R@10": 75.0},
    }


def test_video_retrieval_counts_each_video_once() -> None:
    np.testing.assert_array_equal(video_ranks(TRUTH, RANKED), [1, 2, 11, 2])
    assert video_recall(TRUTH, RANKED) == {
        "R@1": 25.0,
        "R@5": 75.0,
        "R@10": 75.0,
        "MedR": 2.0,  # median of 1, 2, 2, 11
        "found": 4,
    }
    # an even count averages the two middle ranks (1, 2, 11, 11 -> 6.5); an unranked video in
    # the middle gives no median
    assert median_rank(np.array([1.0, 11.0, 2.0, 11.0])) == 6.5
    assert median_rank(np.array([1.0, np.inf, 2.0, np.inf])) is None
    repeated = [[("a", 0, 1), ("a", 1, 2), ("a", 2, 3), ("b", 0, 1)]]
    assert video_ranks([("b", 0, 1)], repeated).tolist() == [2.0]  # not 4


def test_thresholds_forgive_rounding() -> None:
    """IoU((0.1, 0.1 + 0.7 * 3), (0.1, 3.1)) is 0.7 but computes as 0.6999999999999998."""
    truth, predicted = [("a", 0.1, 3.1)], [(0.1, 0.1 + 0.7 * 3.0)]
    assert iou(predicted[0], truth[0][1:]) < 0.7
    assert localisation(truth, predicted)["R@1"]["IoU>=0.7"] == 100.0
    assert first_hit_ranks(truth, [[("a", *predicted[0])]], 0.7).tolist() == [1.0]


def test_no_hits_at_all() -> None:
    truth = [("a", 0.0, 2.0), ("b", 0.0, 2.0)]
    ranked = [[("b", 0.0, 2.0), ("a", 5.0, 6.0)], []]  # a's moment misses; b's list is empty
    assert corpus_moment_recall(truth, ranked)["IoU>=0.5"] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0}
    ranks = video_ranks(truth, ranked)
    np.testing.assert_array_equal(ranks, [2, np.inf])
    assert median_rank(ranks) is None  # the mean of 2 and inf: no finite median
    assert median_rank(np.array([np.inf, 1.0, np.inf])) is None
    assert video_recall(truth, ranked)["found"] == 1


def test_localisation_by_hand() -> None:
    truth = [("a", 0.0, 10.0), ("b", 0.0, 4.0), ("c", 2.0, 4.0), ("d", 0.0, 10.0)]
    predicted = [(0.0, 10.0), (1.0, 3.0), (3.0, 5.0), (5.0, 5.0)]  # IoU 1, 1/2, 1/3, 0
    got = localisation(truth, predicted)
    assert got["mIoU"] == pytest.approx(100 * (1 + 0.5 + 1 / 3 + 0) / 4)
    assert got["R@1"] == {"IoU>=0.5": 50.0, "IoU>=0.7": 25.0}


def test_oracle_brute_force_agrees() -> None:
    """Random lists scored by a plain double loop over ``iou`` give the same ranks."""
    rng = np.random.default_rng(0)
    videos = ["a", "b", "c"]

    def moment() -> tuple[str, float, float]:
        start = float(rng.integers(0, 20))
        return str(rng.choice(videos)), start, start + float(rng.integers(0, 8))

    truth = [moment() for _ in range(60)]
    ranked = [[moment() for _ in range(int(rng.integers(0, 15)))] for _ in truth]
    for threshold in (0.3, 0.5, 0.7):
        expected = []
        for (video, start, end), moments in zip(truth, ranked, strict=True):
            hits = [
                k + 1
                for k, (v, s, e) in enumerate(moments)
                if v == video and iou((s, e), (start, end)) >= threshold
            ]
            expected.append(hits[0] if hits else np.inf)
        np.testing.assert_array_equal(first_hit_ranks(truth, ranked, threshold), expected)
    assert np.isfinite(first_hit_ranks(truth, ranked, 0.5)).sum() >= 5  # hits do occur


def test_report_gathers_everything_as_json() -> None:
    localised = [(0.0, 10.0), (10.0, 16.0), (0.0, 2.0), (20.0, 30.0)]
    report = moment_report(TRUTH, RANKED, localised)
    assert report["queries"] == 4 and report["videos"] == 3
    assert report["listed"] == 6.25  # (1 + 7 + 11 + 6) / 4
    assert report["corpus"]["IoU>=0.7"]["R@5"] == 25.0
    assert report["video"]["MedR"] == 2.0
    assert report["localisation"] == {
        "mIoU": 77.5,  # (1 + 0.6 + 0.5 + 1) / 4
        "R@1": {"IoU>=0.5": 100.0, "IoU>=0.7": 50.0},
    }
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert set(moment_report(TRUTH)) == {"queries", "videos"}
    third = moment_report(TRUTH[:3], localised=localised[:3])["localisation"]["mIoU"]
    assert third == 70.0  # (1 + 0.6 + 0.5) / 3, rounded to 2 decimals


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no queries"):
        moment_report([])
    with pytest.raises(ValueError, match="answers"):
        corpus_moment_recall(TRUTH, RANKED[:3])
    with pytest.raises(ValueError, match="answers"):
        localisation(TRUTH, [(0.0, 1.0)])
