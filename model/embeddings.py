"""What the two branches produce: plain tensors, L2-normalised, padded with zeros and masked.

Both are dataclasses of tensors whose first dimension is the batch, so a store can keep them
(as arrays) and the scoring functions can take them back without the model that made them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


class _Batch:
    """Row selection, concatenation and device moves for dataclasses of batch-first tensors."""

    def _map(self, fn):
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None):
        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return self._map(move)

    def select(self, index: Tensor | list[int] | slice):
        return self._map(lambda t: t[index])

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])

    @classmethod
    def cat(cls, items: list):
        if not items:
            raise ValueError("nothing to concatenate")
        return cls(
            **{f.name: _cat_padded([getattr(x, f.name) for x in items]) for f in fields(cls)}
        )


def _cat_padded(tensors: list[Tensor]) -> Tensor:
    """Concatenate on dim 0, zero-padding dim 1 when lengths differ (frames, phrases)."""
    if tensors[0].dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
        width = max(t.shape[1] for t in tensors)
        tensors = [
            torch.nn.functional.pad(t, [0, 0] * (t.dim() - 2) + [0, width - t.shape[1]])
            for t in tensors
        ]
    return torch.cat(tensors, dim=0)


@dataclass
class VideoEmbeddings(_Batch):
    """The video branch's output for M videos of up to T frames.

    global_: (M, D) event-level video vector (attention pooling of the event frames)
    action_frames / entity_frames: (M, T, D) individual frame embeddings, zeros where padded
    frame_mask: (M, T) bool, True for real frames
    action_segments: (M, Sa, D) key action segments (top verb concepts), with
    action_spans: (M, Sa, 2) long, first and last frame index (inclusive) of each segment
    entity_segments: (M, Se, D) key entity segments (top noun concepts)
    verb_probs / noun_probs: (M, Kv) / (M, Kn) concept probabilities (top-k pooled)
    """

    global_: Tensor
    action_frames: Tensor
    entity_frames: Tensor
    frame_mask: Tensor
    action_segments: Tensor
    action_spans: Tensor
    entity_segments: Tensor
    verb_probs: Tensor
    noun_probs: Tensor


@dataclass
class TextEmbeddings(_Batch):
    """The text branch's output for N sentences.

    global_: (N, D) sentence vector (the graph's root after the GCN)
    verb_phrases / arg_phrases: (N, Pv, D) / (N, Pa, D) individual phrase embeddings
        (max-pooled token states over each verb / argument span)
    verb_nodes / arg_nodes: (N, Pv, D) / (N, Pa, D) local embeddings (role-weighted graph nodes
        after the attention GCN)
    verb_mask / arg_mask: (N, Pv) / (N, Pa) bool, True for real phrases
    verb_probs / noun_probs: (N, Kv) / (N, Kn) concept probabilities (top-k pooled)
    """

    global_: Tensor
    verb_phrases: Tensor
    arg_phrases: Tensor
    verb_nodes: Tensor
    arg_nodes: Tensor
    verb_mask: Tensor
    arg_mask: Tensor
    verb_probs: Tensor
    noun_probs: Tensor

    def without_empty_phrase_slots(self) -> TextEmbeddings:
        """The same texts without the phrase slots that no text fills (all masked): every
        score is unchanged, as masked phrases count nowhere, and one query's cross-attention
        does only the work its phrases need."""
        verbs, args = self.verb_mask.any(0), self.arg_mask.any(0)
        return replace(
            self,
            verb_phrases=self.verb_phrases[:, verbs],
            verb_nodes=self.verb_nodes[:, verbs],
            verb_mask=self.verb_mask[:, verbs],
            arg_phrases=self.arg_phrases[:, args],
            arg_nodes=self.arg_nodes[:, args],
            arg_mask=self.arg_mask[:, args],
        )
