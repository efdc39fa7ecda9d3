"""Faster numeric modes keep the model's answers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from model import create_model
from model.speed import LinearSelfAttention, TracedTextTower, quantize_text_tower, trace_text_tower
from tests.model.conftest import CAPTIONS


def test_linear_self_attention_equals_multihead_attention() -> None:
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 7, 32)
    mask = torch.full((7, 7), float("-inf")).triu(1)
    expected = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
    got = LinearSelfAttention(mha)(x, x, x, attn_mask=mask)[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_int8_text_tower_keeps_sentence_embeddings() -> None:
    model = create_model("tiny")
    fast = quantize_text_tower(copy.deepcopy(model))
    with torch.inference_mode():
        a, b = model.encode_text(CAPTIONS), fast.encode_text(CAPTIONS)
    cosine = (a.global_ * b.global_).sum(-1)
    assert cosine.min() > 0.99
    assert not torch.equal(a.global_, b.global_)  # it did change the arithmetic
    phrases = (a.verb_phrases * b.verb_phrases).sum(-1)[a.verb_mask]
    assert phrases.min() > 0.99
    # the tower's and the heads' Linear layers are all quantised
    assert not any(
        type(m) is nn.Linear for m in [*fast.clip.transformer.modules(), *fast.text.modules()]
    )


@pytest.mark.slow
def test_traced_text_tower_gives_the_eager_towers_answers() -> None:
    # traced once on a batch of 2 x 5 tokens; any batch and sentence length afterwards
    for int8 in (False, True):
        model = create_model("tiny")
        if int8:
            quantize_text_tower(model)
        traced = trace_text_tower(copy.deepcopy(model))
        assert isinstance(traced.clip.transformer, TracedTextTower)
        assert trace_text_tower(traced).clip.transformer is traced.clip.transformer  # once
        for texts in (CAPTIONS[:1], CAPTIONS, ["a dog", CAPTIONS[0] + " and then it shrinks"]):
            with torch.inference_mode():
                a, b = model.encode_text(texts), traced.encode_text(texts)
            for field in ("global_", "verb_nodes", "arg_nodes", "verb_probs", "noun_probs"):
                assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-5), field
