"""Decoded frames -> the pixels the image tower expects (settings travel with the model)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import PreprocessCfg


def frames_to_pixels(frames: np.ndarray | Tensor, cfg: PreprocessCfg) -> Tensor:
    """uint8 RGB frames (T, H, W, 3) -> float pixels (T, 3, S, S): shortest side resized to S
    (bicubic, antialiased; skipped when already S x S), centre crop, [0, 1], normalised."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    size = cfg.image_size
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        ).clamp(0, 1)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (x - mean) / std


def normalize_frames(frames: Tensor, cfg: PreprocessCfg) -> Tensor:
    """Frames already at the model's size, uint8 (..., S, S, 3) -> pixels (..., 3, S, S)."""
    if frames.shape[-3:] != (cfg.image_size, cfg.image_size, 3):
        raise ValueError(
            f"frames must be {cfg.image_size}x{cfg.image_size} RGB, got {tuple(frames.shape)}"
        )
    x = frames.float().div_(255.0).movedim(-1, -3)
    mean = torch.tensor(cfg.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(3, 1, 1)
    return (x - mean) / std
