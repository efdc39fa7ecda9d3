"""HANet from open_clip's own architectures and pretrained weights (spec section 7).

``open_clip.create_model_and_transforms(arch, pretrained=NAME)`` resolves NAME through open_clip's
pretrained registry (``open_clip.list_pretrained()``): a tag such as "openai" or
"laion2b_s34b_b79k" is downloaded into open_clip's cache (Hugging Face Hub or a URL) the first
time, a file path is read as it is. The HANet config is made from open_clip's config for the
architecture, so a checkpoint rebuilds its backbone without the registry.

Only architectures whose model is ``open_clip.CLIP`` with its own text transformer, pooled at
the end-of-text token, and CLIP's BPE tokenizer fit the text branch (it reads every token's
features from those layers); ``SUPPORTED_ARCHS`` lists those that a test checks for the zero-shot
equivalence with CLIP mean pooling.
"""

from __future__ import annotations

import copy
from typing import Any

import open_clip

from model.config import (
    GLOBAL_ONLY_FUSION,
    OPENAI_MEAN,
    OPENAI_STD,
    ConfigError,
    HANetCfg,
    PreprocessCfg,
)
from model.errors import CheckpointError
from model.hanet import HANet
from model.vocab import ConceptVocab

# open_clip architectures checked in tests/model/test_pretrained.py (random weights, no download).
SUPPORTED_ARCHS: tuple[str, ...] = (
    "RN50",
    "ViT-B-32",
    "ViT-B-32-quickgelu",
    "ViT-B-16",
    "ViT-L-14",
)
_CLIP_KEYS = frozenset({"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"})


def clip_config(arch: str, pretrained: str | None = None) -> dict[str, Any]:
    """open_clip's config for ``arch`` (embed_dim, vision_cfg, text_cfg, quick_gelu), with
    QuickGELU when the pretrained tag was trained with it (OpenAI's weights). ConfigError for
    an architecture the text branch cannot read."""
    if arch not in SUPPORTED_ARCHS:
        raise ConfigError(
            f"open_clip architecture {arch!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_ARCHS)}"
        )
    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if cfg is None or set(cfg) - _CLIP_KEYS:
        raise ConfigError(f"open_clip has no plain CLIP config named {arch!r}")
    tag = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}
    if tag.get("quick_gelu"):
        cfg["quick_gelu"] = True
    return cfg


def hanet_config(arch: str, pretrained: str | None = None) -> HANetCfg:
    """A HANet architecture on open_clip's ``arch``: the joint space is CLIP's, the text
    context CLIP's, preprocessing the pretrained tag's (OpenAI's mean and std otherwise), and
    the fusion the global score alone until the heads are trained."""
    clip = clip_config(arch, pretrained)
    tag = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}
    size = clip["vision_cfg"].get("image_size", 224)
    size = int(size if isinstance(size, int) else size[0])
    return HANetCfg(
        name=arch,
        clip_arch=arch,
        clip=clip,
        embed_dim=int(clip["embed_dim"]),
        max_words=int(clip["text_cfg"].get("context_length", 77)),
        fusion=GLOBAL_ONLY_FUSION,
        preprocess=PreprocessCfg(
            size, tuple(tag.get("mean", OPENAI_MEAN)), tuple(tag.get("std", OPENAI_STD))
        ),
    )


def create_pretrained(arch: str, pretrained: str, cache_dir: str | None = None) -> HANet:
    """HANet on open_clip's ``arch`` with the weights ``pretrained`` names (a registry tag,
    downloaded into ``cache_dir`` or open_clip's default cache when absent, or a weights file),
    in eval mode: it scores like CLIP with mean-pooled frames until trained. CheckpointError
    when open_clip cannot find or load the weights."""
    cfg = hanet_config(arch, pretrained)
    return from_open_clip(cfg, load_open_clip(cfg, pretrained, cache_dir))


def load_open_clip(cfg: HANetCfg, pretrained: str, cache_dir: str | None = None) -> open_clip.CLIP:
    """open_clip's own model for ``cfg.clip_arch`` with the weights ``pretrained`` names,
    resolved by its registry (QuickGELU as ``cfg`` says). CheckpointError when it fails."""
    try:
        clip, _, _ = open_clip.create_model_and_transforms(
            cfg.clip_arch,
            pretrained=pretrained,
            cache_dir=cache_dir,
            force_quick_gelu=bool(cfg.clip.get("quick_gelu")),
        )
    except Exception as exc:  # unknown tags, failed downloads, bad files: many types
        raise CheckpointError(
            f"open_clip cannot load {cfg.clip_arch} weights {pretrained!r}: {exc}"
        ) from exc
    return clip


def from_open_clip(cfg: HANetCfg, clip: open_clip.CLIP, vocab: ConceptVocab | None = None) -> HANet:
    """HANet of ``cfg`` (with ``vocab``) whose backbone takes ``clip``'s weights (strictly), in
    eval mode."""
    model = HANet(cfg, vocab)
    model.clip.load_state_dict(clip.state_dict(), strict=True)
    return model.eval()
