"""HANet video branch heads (spec section 2), on top of per-frame backbone features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import HANetCfg
from model.embeddings import VideoEmbeddings
from model.layers import (
    ConceptClassifier,
    SqueezeExcite,
    level_projection,
    masked_softmax,
    topk_pool,
)


class VideoHeads(nn.Module):
    def __init__(self, cfg: HANetCfg) -> None:
        super().__init__()
        self.cfg = cfg
        dim_in, dim = cfg.clip_embed_dim, cfg.embed_dim
        self.event = level_projection(dim_in, dim)
        self.action = level_projection(dim_in, dim)
        self.motion = None
        if cfg.motion_kernel:
            dim_out = dim_in if cfg.motion_levels == "all" else dim
            k = cfg.motion_kernel
            # + keypoint positions and motion-stream features, when the frames carry them
            self.motion = nn.Conv1d(dim_in + cfg.frame_extras, dim_out, k, padding=k // 2)
            nn.init.zeros_(self.motion.weight)
            nn.init.zeros_(self.motion.bias)
        self.entity = level_projection(dim_in, dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.pool = nn.Linear(dim, 1)  # global attention pooling; zero = uniform = mean pooling
        nn.init.zeros_(self.pool.weight)
        nn.init.zeros_(self.pool.bias)
        self.verb_classifier = ConceptClassifier(dim, cfg.num_verbs, kernel_size=5)
        self.noun_classifier = ConceptClassifier(dim, cfg.num_nouns, kernel_size=1)
        self.action_se = SqueezeExcite(dim, cfg.se_reduction)
        self.entity_se = SqueezeExcite(dim, cfg.se_reduction)

    def forward(self, features: Tensor, mask: Tensor) -> VideoEmbeddings:
        """features (M, T, Dc) per-frame backbone features (zeros where padded), mask (M, T);
        with keypoints or a motion stream, (M, T, Dc + cfg.frame_extras): the extra features
        are read by the temporal convolution only."""
        m = mask.unsqueeze(-1).to(features.dtype)
        features = features * m  # padding is zeros, like the convolutions' own padding
        motion_input = features
        features = features[..., : self.cfg.clip_embed_dim]
        shared_motion = self.motion is not None and self.cfg.motion_levels == "all"
        if shared_motion:
            features = (features + self._motion(motion_input)) * m
        event = self.drop(self.event(features)) * m  # (M, T, D)
        action = self.action(features)
        if self.motion is not None and not shared_motion:
            action = action + self._motion(motion_input)
        action = self.drop(action) * m
        entity = self.drop(self.entity(features)) * m

        weights = masked_softmax(self.pool(event).squeeze(-1), mask)  # (M, T)
        global_ = (weights.unsqueeze(-1) * event).sum(1)  # (M, D)

        verb_frame_probs = self.verb_classifier(action, mask)  # (M, T, Kv)
        noun_frame_probs = self.noun_classifier(entity, mask)  # (M, T, Kn)
        verb_probs = topk_pool(verb_frame_probs, mask, self.cfg.topk_divisor)
        noun_probs = topk_pool(noun_frame_probs, mask, self.cfg.topk_divisor)

        action_segments, action_spans = select_action_segments(
            self.action_se(action, mask),
            verb_frame_probs,
            verb_probs,
            mask,
            self.cfg.num_action_segments,
            self.cfg.action_window,
        )
        entity_segments = select_entity_segments(
            self.entity_se(entity, mask),
            noun_frame_probs,
            noun_probs,
            mask,
            self.cfg.num_entity_segments,
            self.cfg.entity_frames,
        )
        return VideoEmbeddings(
            global_=F.normalize(global_, dim=-1),
            action_frames=F.normalize(action, dim=-1),
            entity_frames=F.normalize(entity, dim=-1),
            frame_mask=mask,
            action_segments=F.normalize(action_segments, dim=-1),
            action_spans=action_spans,
            entity_segments=F.normalize(entity_segments, dim=-1),
            verb_probs=verb_probs,
            noun_probs=noun_probs,
        )

    def _motion(self, frames: Tensor) -> Tensor:
        assert self.motion is not None
        return self.motion(frames.transpose(1, 2)).transpose(1, 2)


def _concept_frame_probs(frame_probs: Tensor, concepts: Tensor, mask: Tensor) -> Tensor:
    """Per-frame probabilities of the chosen concepts: (M, T, K), (M, S), (M, T) -> (M, S, T),
    with -1 at padded frames so they are never picked."""
    picked = frame_probs.gather(2, concepts.unsqueeze(1).expand(-1, frame_probs.shape[1], -1))
    return picked.transpose(1, 2).masked_fill(~mask.unsqueeze(1), -1.0)


def select_action_segments(
    frames: Tensor, frame_probs: Tensor, probs: Tensor, mask: Tensor, count: int, window: int
) -> tuple[Tensor, Tensor]:
    """Key action segments: for each of the video's top ``count`` verb concepts, the mean of a
    ``window``-frame window around the frame where that concept peaks (the peak frame alone when
    the window would leave the video). Hard selection: gradients reach the chosen frames only.

    frames (M, T, D), frame_probs (M, T, Kv), probs (M, Kv), mask (M, T)
    -> segments (M, S, D), spans (M, S, 2) first/last frame index, inclusive."""
    concepts = probs.topk(count, dim=1).indices  # (M, S)
    peak = _concept_frame_probs(frame_probs, concepts, mask).argmax(dim=2)  # (M, S)
    half = window // 2
    lengths = mask.sum(dim=1, keepdim=True)  # (M, 1)
    fits = (peak - half >= 0) & (peak + half < lengths)
    start = torch.where(fits, peak - half, peak)
    end = torch.where(fits, peak + half, peak)
    t = torch.arange(frames.shape[1], device=frames.device).view(1, 1, -1)
    inside = ((t >= start.unsqueeze(-1)) & (t <= end.unsqueeze(-1))).to(frames.dtype)  # (M,S,T)
    segments = (inside / inside.sum(-1, keepdim=True)) @ frames  # (M, S, D)
    return segments, torch.stack([start, end], dim=-1)


def select_entity_segments(
    frames: Tensor, frame_probs: Tensor, probs: Tensor, mask: Tensor, count: int, per: int
) -> Tensor:
    """Key entity segments: for each of the top ``count`` noun concepts, the mean of the
    ``per`` valid frames where it is most probable (fewer when the video is shorter).
    frames (M, T, D), frame_probs (M, T, Kn), probs (M, Kn), mask (M, T) -> (M, S, D)."""
    concepts = probs.topk(count, dim=1).indices  # (M, S)
    scored = _concept_frame_probs(frame_probs, concepts, mask)  # (M, S, T)
    best = scored.topk(min(per, frames.shape[1]), dim=2).indices  # (M, S, k)
    chosen = torch.zeros_like(scored).scatter_(2, best, 1.0) * mask.unsqueeze(1)  # (M, S, T)
    return (chosen / chosen.sum(-1, keepdim=True).clamp(min=1)) @ frames
