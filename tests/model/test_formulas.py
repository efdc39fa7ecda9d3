"""Each formula against a value computed by hand (plain Python, the spec's own wording)."""

from __future__ import annotations

import math

import pytest
import torch

from model.layers import SpatialSoftArgmax, masked_softmax, topk_pool
from model.losses import contrast_hinge, masked_bce, triplet_all, triplet_hardest
from model.scores import cross_attention, gram, jaccard


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _reference_cross_attention(
    phrase: list[float], units: list[list[float]], scale: float
) -> float:
    """The spec's steps, literally: g, clip, L2-normalise over units, softmax, v_hat, cosine."""
    g = [max(_cos(u, phrase), 0.0) for u in units]
    norm = math.sqrt(sum(x * x for x in g))
    g = [x / norm for x in g]
    e = [math.exp(scale * x) for x in g]
    a = [x / sum(e) for x in e]
    v_hat = [sum(a[f] * units[f][d] for f in range(len(units))) for d in range(len(phrase))]
    return _cos(v_hat, phrase)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_cross_attention_matches_the_spec_by_hand() -> None:
    units = [
        _unit([1.0, 0.0, 0.2]),
        _unit([0.0, 1.0, 0.0]),
        _unit([0.6, 0.8, 0.0]),
        _unit([-1.0, 0.1, 0.0]),
    ]
    phrases = [_unit([1.0, 0.2, 0.0]), _unit([0.1, 1.0, 0.3])]
    expected = sum(_reference_cross_attention(p, units, 4.0) for p in phrases) / 2
    score, attn = cross_attention(
        torch.tensor([phrases]),
        torch.tensor([[True, True]]),
        torch.tensor([units]),
        torch.tensor([[True] * 4]),
        scale=4.0,
    )
    assert score.shape == (1, 1)
    assert score.item() == pytest.approx(expected, abs=1e-6)
    assert attn[0, 0, 0].argmax().item() == 0  # the first phrase attends to the first unit
    assert attn[0, 0].sum(-1).tolist() == pytest.approx([1.0, 1.0])


def test_cross_attention_ignores_padded_units_and_phrases() -> None:
    units = [_unit([1.0, 0.0, 0.2]), _unit([0.0, 1.0, 0.0])]
    phrase = _unit([1.0, 0.5, 0.0])
    expected = _reference_cross_attention(phrase, units, 4.0)
    garbage = [9.0, -3.0, 1.0]
    score, attn = cross_attention(
        torch.tensor([[phrase, [0.0, 0.0, 0.0]]]),
        torch.tensor([[True, False]]),
        torch.tensor([units + [garbage]]),
        torch.tensor([[True, True, False]]),
        scale=4.0,
    )
    assert score.item() == pytest.approx(expected, abs=1e-6)
    assert attn[0, 0, 0, 2].item() == 0.0


def test_both_ways_of_computing_the_attended_norm_agree() -> None:
    """The Gram form (training) and the direct form (serving) are the same number."""
    phrases = torch.nn.functional.normalize(torch.randn(3, 4, 16), dim=-1)
    units = torch.nn.functional.normalize(torch.randn(5, 7, 16), dim=-1)
    phrase_mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])
    unit_mask = torch.ones(5, 7, dtype=torch.bool)
    unit_mask[1, 3:] = False
    gram, attn_g = cross_attention(phrases, phrase_mask, units, unit_mask, 4.0, norm="gram")
    direct, attn_d = cross_attention(phrases, phrase_mask, units, unit_mask, 4.0, norm="direct")
    assert torch.allclose(gram, direct, atol=1e-6) and torch.equal(attn_g, attn_d)
    assert gram.abs().sum() > 0


def test_float16_units_with_stored_grams_score_as_float32() -> None:
    """Serving multiplies the float16 rerank rows as stored and takes the units' norms from
    their stored Gram matrices: the scores are those of the same rows in float32."""
    phrases = torch.nn.functional.normalize(torch.randn(1, 2, 64), dim=-1)
    units = torch.nn.functional.normalize(torch.randn(9, 7, 64), dim=-1).half()
    phrase_mask = torch.tensor([[True, True]])
    unit_mask = torch.ones(9, 7, dtype=torch.bool)
    unit_mask[2, 4:] = False
    exact, attn = cross_attention(phrases, phrase_mask, units.float(), unit_mask, 4.0)
    grams = gram(units, torch.float32)
    for stored in (grams, None):  # with the stored Gram matrices, and without (older builds)
        got, got_attn = cross_attention(phrases, phrase_mask, units, unit_mask, 4.0, grams=stored)
        assert got.dtype == torch.float32
        assert torch.allclose(got, exact, atol=3e-4) and torch.allclose(got_attn, attn, atol=3e-3)
    assert exact.abs().sum() > 0


def test_cross_attention_is_zero_without_phrases() -> None:
    score, _ = cross_attention(
        torch.zeros(1, 2, 3),
        torch.zeros(1, 2, dtype=torch.bool),
        torch.randn(3, 4, 3),
        None,
        scale=4.0,
    )
    assert score.tolist() == [[0.0, 0.0, 0.0]]


def test_jaccard_by_hand() -> None:
    p = [0.9, 0.1, 0.5, 0.0]
    q = [0.3, 0.4, 0.5, 1.0]
    expected = sum(map(min, p, q)) / sum(map(max, p, q))  # 0.9 / 2.8
    got = jaccard(torch.tensor([p, q]), torch.tensor([q, p]))
    assert got[0, 0].item() == pytest.approx(expected, abs=1e-6)
    assert got[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert got[1, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_topk_pool_by_hand() -> None:
    # 10 valid frames -> k = ceil(10 / 8) = 2; 3 valid frames -> k = 1; padding never counts.
    probs = torch.zeros(2, 12, 1)
    probs[0, :10, 0] = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.0, 0.0, 0.0, 0.0, 0.5])
    probs[0, 10:, 0] = 1.0  # padded, must be ignored
    probs[1, :3, 0] = torch.tensor([0.2, 0.6, 0.4])
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :10] = True
    mask[1, :3] = True
    pooled = topk_pool(probs, mask, divisor=8)
    assert pooled[:, 0].tolist() == pytest.approx([(0.9 + 0.8) / 2, 0.6])


def test_triplet_hardest_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.8], [0.2, 0.6, 0.1], [0.3, 0.7, 0.4]])
    positives = torch.eye(3, dtype=torch.bool)
    m = 0.2
    t2v = [max(0, m + 0.8 - 0.9), max(0, m + 0.2 - 0.6), max(0, m + 0.7 - 0.4)]
    v2t = [max(0, m + 0.3 - 0.9), max(0, m + 0.7 - 0.6), max(0, m + 0.8 - 0.4)]
    expected = sum(t2v) / 3 + sum(v2t) / 3
    assert triplet_hardest(scores, positives, m).item() == pytest.approx(expected, abs=1e-6)


def test_triplet_all_by_hand() -> None:
    scores = [[0.9, 0.5, 0.8], [0.2, 0.6, 0.1], [0.3, 0.7, 0.4]]
    m, total = 0.2, 0.0
    for i in range(3):
        for j in range(3):
            if i != j:
                total += max(0, m + scores[i][j] - scores[i][i])  # text i vs video j
                total += max(0, m + scores[j][i] - scores[i][i])  # video i vs text j
    got = triplet_all(torch.tensor(scores), torch.eye(3, dtype=torch.bool), m)
    assert got.item() == pytest.approx(total / 6, abs=1e-6)


def test_contrast_hinge_by_hand() -> None:
    # rows 0-1: the true captions of videos 0 and 1; rows 2-3: contrast captions of video 1, 0
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.5], [0.0, 0.6], [0.6, 0.9]])
    m = 0.2
    expected = (max(0, m + 0.6 - 0.5) + max(0, m + 0.6 - 0.9)) / 2  # 0.3 and 0 (beaten by 0.3)
    got = contrast_hinge(scores, torch.tensor([1, 0]), m)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_masked_bce_skips_masked_concepts() -> None:
    probs = torch.tensor([[0.8, 0.3, 0.99]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    expected = (-math.log(0.8) - math.log(0.7)) / 2
    assert masked_bce(probs, labels, mask).item() == pytest.approx(expected, abs=1e-5)


def test_masked_softmax_of_fully_masked_row_is_zero() -> None:
    out = masked_softmax(torch.randn(2, 3), torch.tensor([[True, False, True], [False] * 3]))
    assert out[1].tolist() == [0.0, 0.0, 0.0]
    assert out[0, 1].item() == 0.0
    assert out[0].sum().item() == pytest.approx(1.0)


def test_spatial_soft_argmax_by_hand() -> None:
    # a 2 x 3 grid of patches: x from -1 to 1 over 3 columns, y from -1 to 1 over 2 rows
    layer = SpatialSoftArgmax(width=2, keypoints=2, grid=(2, 3))
    with torch.no_grad():
        layer.maps.weight.copy_(torch.tensor([[60.0, 0.0], [0.0, 0.0]]))  # keypoint 2: flat map
        layer.maps.bias.zero_()
    patches = torch.zeros(1, 6, 2)
    patches[0, 5, 0] = 1.0  # the last patch: row 1, column 2
    got = layer(patches)[0].tolist()
    assert got[:2] == pytest.approx([1.0, 1.0], abs=1e-6)  # keypoint 1 sits on that patch
    assert got[2:] == pytest.approx([0.0, 0.0], abs=1e-6)  # a flat map: the grid's centre
