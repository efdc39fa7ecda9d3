"""Faster numeric modes keep the model's answers."""

from __future__ import annotations

import copy

import torch
from torch import nn

from model import create_model
from model.speed import LinearSelfAttention, quantize_text_tower
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
