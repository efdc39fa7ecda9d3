"""Spec section 7: a HANet built from CLIP weights with untrained heads scores exactly like
CLIP with mean-pooled frames."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from model import create_model, get_config
from tests.model.conftest import CAPTIONS


@pytest.mark.slow
def test_global_and_fused_scores_equal_clip_mean_pooling(tmp_path) -> None:
    cfg = get_config("tiny")
    torch.manual_seed(123)
    clip = open_clip.CLIP(**cfg.clip).eval()
    weights = tmp_path / "open_clip_tiny.pt"
    torch.save(clip.state_dict(), weights)

    model = create_model("tiny", clip_weights=str(weights))
    t, size = 6, cfg.preprocess.image_size
    pixels = torch.randn(3, t, 3, size, size, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(3, t, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False

    with torch.no_grad():
        scores = model.similarity(model.encode_text(CAPTIONS), model.encode_video(pixels, mask))
        tokens = open_clip.tokenize(CAPTIONS, context_length=cfg.clip["text_cfg"]["context_length"])
        text_ref = F.normalize(clip.encode_text(tokens), dim=-1)
        video_ref = []
        for i in range(3):
            frames = F.normalize(clip.encode_image(pixels[i][mask[i]]), dim=-1)
            video_ref.append(F.normalize(frames.mean(0), dim=-1))
        expected = text_ref @ torch.stack(video_ref).T

    assert torch.allclose(scores["global"], expected, atol=1e-5)
    assert torch.allclose(scores["fused"], expected, atol=1e-5)
    # and the check is not vacuous: the scores differ between pairs
    assert expected.std() > 1e-3


def test_text_tokens_match_open_clip_tokenizer() -> None:
    model = create_model("tiny")
    parsed = model.parse(CAPTIONS)
    ref = open_clip.tokenize(CAPTIONS, context_length=parsed.token_ids.shape[1])
    assert torch.equal(parsed.token_ids, ref)


def test_long_sentences_are_truncated_with_end_token() -> None:
    model = create_model("tiny")
    parsed = model.parse(["a red star moves left " * 20])
    length = model.cfg.max_words
    assert parsed.token_ids.shape[1] == length
    assert parsed.token_ids[0, -1].item() == model.parser.tokenizer.eot_token_id
    assert parsed.verb_spans.any(-1).sum() == model.cfg.max_verbs
