"""Small building blocks shared by the two branches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` ignoring positions where ``mask`` is False (they get weight 0)."""
    logits = logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, dim=dim)
    return torch.nan_to_num(weights, nan=0.0)  # rows with nothing valid


def topk_pool(probs: Tensor, mask: Tensor, divisor: int) -> Tensor:
    """Multiple-instance pooling: per concept, the mean of its top-k probabilities over valid
    positions, k = ceil(valid_len / divisor).  probs (B, T, K), mask (B, T) -> (B, K)."""
    lengths = mask.sum(dim=1)  # (B,)
    k = torch.div(lengths + divisor - 1, divisor, rounding_mode="floor").clamp(min=1)  # (B,)
    most = -(-probs.shape[1] // divisor)  # the largest k: only the top ``most`` are needed
    ranked = probs.masked_fill(~mask.unsqueeze(-1), -1.0).topk(most, dim=1).values
    ranks = torch.arange(most, device=probs.device)
    take = (ranks.unsqueeze(0) < k.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
    return (ranked.clamp(min=0) * take).sum(dim=1) / k.unsqueeze(1).to(probs.dtype)


class ConceptClassifier(nn.Module):
    """Conv1d over time -> BatchNorm -> sigmoid: per-position concept probabilities.

    BatchNorm statistics use valid positions only, so padding never changes a probability."""

    def __init__(self, dim: int, num_concepts: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, num_concepts, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm1d(num_concepts)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D) with zeros at padded positions, mask (B, T) -> probs (B, T, K)."""
        if self.conv.kernel_size == (1,):  # a per-position linear map: as one (on the CPU
            # the convolution takes its slower im2col path for the same numbers)
            logits = F.linear(x, self.conv.weight.squeeze(-1), self.conv.bias)
        else:
            logits = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, K)
        out = torch.zeros_like(logits)
        out[mask] = self.norm(logits[mask])
        return torch.sigmoid(out) * mask.unsqueeze(-1)


class SqueezeExcite(nn.Module):
    """Channel reweighting from the mean over valid frames (reduction r)."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D), mask (B, T) -> (B, T, D)."""
        m = mask.unsqueeze(-1).to(x.dtype)
        squeezed = (x * m).sum(1) / m.sum(1).clamp(min=1)  # (B, D)
        return x * torch.sigmoid(self.fc(squeezed)).unsqueeze(1)


def level_projection(in_dim: int, out_dim: int) -> nn.Linear:
    """A level projection (event / action / entity) initialised to the identity when the
    dimensions agree, so a fresh model starts from the backbone's own embedding space."""
    proj = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        if in_dim == out_dim:
            proj.weight.copy_(torch.eye(out_dim))
        else:
            nn.init.xavier_uniform_(proj.weight)
        proj.bias.zero_()
    return proj


class AttentionGCN(nn.Module):
    """One attention graph-convolution layer: scaled dot-product attention restricted to the
    graph's edges, out = Norm(X + Dropout(W(attn X))).

    Adaptation (spec section 7): W starts at zero and the norm is RMSNorm (scale only, weight 1),
    so a fresh layer returns its input up to scale, which leaves every cosine score unchanged;
    LayerNorm's mean subtraction would not."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """x (B, N, D), adjacency (B, N, N) bool, [b, i, j]: node i receives from node j ->
        (B, N, D). A node that receives from no one gets no update, only the norm (the
        reference's W has no bias, so its update is zero there; ours has one)."""
        logits = self.query(x) @ self.key(x).transpose(1, 2) / x.shape[-1] ** 0.5
        attn = masked_softmax(logits, adjacency)
        hears = adjacency.any(dim=-1, keepdim=True).to(x.dtype)  # (B, N, 1)
        return self.norm(x + self.drop(self.out(attn @ x)) * hears)


class SpatialSoftArgmax(nn.Module):
    """K keypoints per image from a grid of patch tokens: a learnt map per keypoint, softmax
    over the patches, and the expected (x, y) grid position under it, in [-1, 1] (Levine et al.,
    "End-to-end training of deep visuomotor policies", 2016). (N, H*W, C) -> (N, 2K)."""

    def __init__(self, width: int, keypoints: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.maps = nn.Linear(width, keypoints)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, grid[0]), torch.linspace(-1, 1, grid[1]), indexing="ij"
        )
        self.register_buffer(
            "positions", torch.stack([xs, ys], -1).reshape(-1, 2), persistent=False
        )

    def forward(self, patches: Tensor) -> Tensor:
        weights = self.maps(patches).softmax(dim=1)  # (N, P, K)
        return (weights.transpose(1, 2) @ self.positions.to(weights.dtype)).flatten(1)  # (N, 2K)


class FrameDifferences(nn.Module):
    """A motion stream over raw frames: each frame beside its difference to the next one (zero
    for the last real frame), through stride-2 convolutions down to about 8 x 8, max-pooled over
    space (a moving object is small: a mean would dilute it) and projected to ``dim`` features.
    Where a thing went is in the sign pattern of the difference (it appears where it went and
    leaves where it was), which such filters see locally. (B, T, 3, H, W), mask (B, T) ->
    (n_valid, dim), the real frames in ``pixels[mask]`` order. ``following`` (B, T, 3, H, W),
    when given, is each frame's own successor in its video (the indexer decodes it beside the
    sampled frame), so the difference spans one frame interval however far apart the sampled
    frames are (a long segment's); without it, the next sampled frame stands in (training clips,
    whose sampled frames are adjacent or nearly)."""

    def __init__(self, image_size: int, dim: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size, stage = 6, image_size, 0
        while stage == 0 or size > 8:  # widths: width, 2 x width, then 4 x width
            out = width * 2 ** min(stage, 2)
            kernel = 5 if stage == 0 else 3
            layers += [nn.Conv2d(channels, out, kernel, stride=2, padding=kernel // 2), nn.GELU()]
            channels, size, stage = out, (size + 1) // 2, stage + 1
        self.net = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.out = nn.Linear(channels, dim)

    def forward(self, pixels: Tensor, mask: Tensor, following: Tensor | None = None) -> Tensor:
        if following is None:
            following = torch.cat([pixels[:, 1:], pixels[:, -1:]], dim=1)
            moved = mask & torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
        else:
            moved = mask
        change = (following - pixels) * moved[..., None, None, None].to(pixels.dtype)
        return self.out(self.net(torch.cat([pixels, change], dim=2)[mask]))
