"""What one training epoch iterates over, and which pairs of a batch are true negatives."""

from __future__ import annotations

import random

import torch
from torch import Tensor

# One batch entry: a video and the index of its caption, or None to draw one at random when
# the batch is used (epoch unit "videos").
Pair = tuple[int, int | None]


def epoch_batches(
    captions: list[list[str]], batch_size: int, unit: str, rng: random.Random
) -> list[list[Pair]]:
    """The epoch's batches in a shuffled order. ``unit`` "videos": each video once, its caption
    drawn when the batch is used; "pairs": each (video, caption) pair once (the reference's
    epoch: its dataset's length is the number of pairs, shuffled by the data loader). Batches of
    one entry are dropped: a ranking loss needs negatives."""
    if unit == "videos":
        order = list(range(len(captions)))
        rng.shuffle(order)
        entries: list[Pair] = [(v, None) for v in order]
    elif unit == "pairs":
        entries = [(v, c) for v, caps in enumerate(captions) for c in range(len(caps))]
        rng.shuffle(entries)
    else:
        raise ValueError(f"unknown epoch unit {unit!r}")
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    return [b for b in batches if len(b) > 1]


def true_negatives(videos: list[int], texts: list[str], mask_duplicates: bool) -> Tensor:
    """(B, B) bool: caption i against video j is a negative. Always not for i == j; with
    ``mask_duplicates`` also not where j is the same video as i's (pairs of one video in a
    batch) or where j's caption is the same text as i's (two videos one caption fits): ranking
    them below the positive would punish a right answer."""
    b = len(videos)
    negatives = ~torch.eye(b, dtype=torch.bool)
    if mask_duplicates:
        vid = torch.tensor(videos)
        same_video = vid[:, None] == vid[None, :]
        ids: dict[str, int] = {}
        txt = torch.tensor([ids.setdefault(t, len(ids)) for t in texts])
        same_text = txt[:, None] == txt[None, :]
        negatives &= ~(same_video | same_text)
    return negatives
