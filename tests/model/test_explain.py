"""Explanations read from the rerank's own cross-attention, and per-query level weights."""

from __future__ import annotations

import pytest
import torch

from model.config import SCORE_NAMES, SPEC_FUSION
from model.explain import explain, explain_rows, weighted_fusion
from tests.model.conftest import random_pixels

SENTENCE = "a small red star moves left, then a blue circle grows"


@pytest.fixture(scope="module")
def unit(tiny):
    """One unit of 8 frames, the last two padding."""
    tiny.eval()
    mask = torch.tensor([[True] * 6 + [False] * 2])
    with torch.no_grad():
        return tiny.encode_video(random_pixels(tiny, 1, 8, seed=3), mask)


def test_each_phrase_of_the_sentence_is_explained(tiny, unit) -> None:
    matches = explain_rows(tiny, SENTENCE, unit, top_frames=8)
    parsed = tiny.parse([SENTENCE]).decompositions[0]
    assert [m.kind for m in matches] == ["action"] * len(parsed.verbs) + ["entity"] * len(
        parsed.args
    )
    texts = [m.text for m in matches]
    assert (
        "moves" in texts[0]
        and any("star" in t for t in texts)
        and any("circle" in t for t in texts)
    )
    for m in matches:
        assert {i for i, _ in m.frames} <= set(range(6))  # never a padded frame
        assert len(m.frames) == 6  # every valid frame, asked for 8
        weights = [w for _, w in m.frames]
        assert weights == sorted(weights, reverse=True)
        assert sum(weights) == pytest.approx(1.0, abs=1e-3)  # a softmax over the valid frames
        assert 0 <= m.segment < unit.action_segments.shape[1]
        assert -1 <= m.score <= 1 and -1 <= m.segment_score <= 1


def test_phrase_scores_are_the_rerank_scores_read_per_phrase(tiny, unit) -> None:
    """The mean of the phrases' cosines is the individual / local score the rerank fuses."""
    matches = explain_rows(tiny, SENTENCE, unit)
    with torch.no_grad():
        scores = tiny.similarity(tiny.encode_text([SENTENCE]), unit)
    for kind in ("action", "entity"):
        own = [m for m in matches if m.kind == kind]
        individual = sum(m.score for m in own) / len(own)
        local = sum(m.segment_score for m in own) / len(own)
        assert individual == pytest.approx(float(scores[f"individual_{kind}"]), abs=2e-4)
        assert local == pytest.approx(float(scores[f"local_{kind}"]), abs=2e-4)


def test_a_sentence_without_phrases_has_nothing_to_explain(tiny, unit) -> None:
    assert explain_rows(tiny, "", unit) == []
    with pytest.raises(ValueError, match="one sentence and one unit"):
        parsed = tiny.parse([SENTENCE, SENTENCE])
        explain(tiny.encode_parsed(parsed), parsed.decompositions[0], unit, 1.0)


def test_level_weights_scale_their_own_scores_only() -> None:
    assert weighted_fusion(SPEC_FUSION, {}) == SPEC_FUSION
    no_action = dict(zip(SCORE_NAMES, weighted_fusion(SPEC_FUSION, {"action": 0}), strict=True))
    assert no_action["local_action"] == no_action["individual_action"] == 0
    assert no_action["global"] == SPEC_FUSION[0] and no_action["concept_verb"] == SPEC_FUSION[5]
    doubled = dict(zip(SCORE_NAMES, weighted_fusion(SPEC_FUSION, {"concept": 2}), strict=True))
    assert doubled["concept_noun"] == 2 * SPEC_FUSION[6] and doubled["global"] == SPEC_FUSION[0]
    with pytest.raises(ValueError, match="unknown level 'frames'"):
        weighted_fusion(SPEC_FUSION, {"frames": 1})
    with pytest.raises(ValueError, match="0 or more"):
        weighted_fusion(SPEC_FUSION, {"event": -1})
    with pytest.raises(ValueError, match="weight 0"):
        weighted_fusion(SPEC_FUSION, dict.fromkeys(("event", "action", "entity", "concept"), 0))
