"""The open_clip backbone: building it, loading published weights, per-frame and per-token
features (spec section 7)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from model.errors import CheckpointError


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU (where bf16 measured slower)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_clip(clip_cfg: dict) -> open_clip.CLIP:
    """The open_clip model for a config dict (embed_dim, vision_cfg, text_cfg), random weights."""
    return open_clip.CLIP(**clip_cfg)


def load_clip_weights(clip: open_clip.CLIP, path: str | Path) -> None:
    """Load a published open_clip weights file (state dict, possibly wrapped, or safetensors)
    with open_clip's own fixes, strictly: every tensor must match the architecture."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"CLIP weights file not found: {path}")
    try:
        open_clip.load_checkpoint(clip, str(path), strict=True)
    except Exception as exc:  # torch/safetensors raise many types for bad files
        raise CheckpointError(f"cannot load CLIP weights from {path}: {exc}") from exc


def encode_frames(clip: open_clip.CLIP, pixels: Tensor) -> Tensor:
    """pixels (N, 3, H, W) -> L2-normalised image embeddings (N, Dc)."""
    return F.normalize(clip.encode_image(pixels), dim=-1)


def encode_frames_and_patches(clip: open_clip.CLIP, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """pixels (N, 3, H, W) -> normalised image embeddings (N, Dc) and the image tower's final
    patch tokens (N, P, width), from one pass."""
    visual = clip.visual
    wanted = visual.output_tokens
    visual.output_tokens = True
    try:
        pooled, patches = visual(pixels)
    finally:
        visual.output_tokens = wanted
    return F.normalize(pooled, dim=-1), patches


def encode_tokens(
    clip: open_clip.CLIP, token_ids: Tensor, eot_index: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-token text features: the final LayerNorm and text projection applied to every token,
    not only the end-of-text one. The sequence is trimmed to the batch's longest sentence: with
    CLIP's causal mask, padding after the end-of-text token cannot change any earlier token.

    token_ids (N, L), eot_index (N,) -> tokens (N, L, Dc), sentence (N, Dc), both normalised."""
    length = token_ids.shape[1]
    cast = clip.token_embedding.weight.dtype
    x = clip.token_embedding(token_ids).to(cast) + clip.positional_embedding[:length].to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)  # (N, L, width)
    proj = clip.text_projection
    x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj  # (N, L, Dc)
    x = F.normalize(x, dim=-1)
    sentence = x[torch.arange(x.shape[0], device=x.device), eot_index]
    return x, sentence
