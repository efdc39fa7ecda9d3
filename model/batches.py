"""What one training epoch iterates over, and which pairs of a batch are true negatives."""

from __future__ import annotations

import random

import torch
from torch import Tensor

# One batch entry: a video and the index of its caption, or None to draw one at random when
# the batch is used (epoch unit "videos").
Pair = tuple[int, int | None]


def epoch_batches(
    captions: list[list[str]],
    batch_size: int,
    unit: str,
    rng: random.Random,
    groups: list[str] | None = None,
) -> list[list[Pair]]:
    """The epoch's batches in a shuffled order. ``unit`` "videos": each video once, its caption
    drawn when the batch is used; "pairs": each (video, caption) pair once (the reference's
    epoch: its dataset's length is the number of pairs, shuffled by the data loader). Batches of
    one entry are dropped: a ranking loss needs negatives. ``groups`` (one key per video, e.g.
    the long video a window was cut from): each group's entries follow each other before the
    cut into batches, so a batch holds whole groups (and parts of the two at its ends), and
    their members are each other's negatives; groups and their members in a shuffled order."""
    if unit == "videos":
        order = list(range(len(captions)))
        rng.shuffle(order)
        entries: list[Pair] = [(v, None) for v in order]
    elif unit == "pairs":
        entries = [(v, c) for v, caps in enumerate(captions) for c in range(len(caps))]
        rng.shuffle(entries)
    else:
        raise ValueError(f"unknown epoch unit {unit!r}")
    if groups is not None:
        if len(groups) != len(captions):
            raise ValueError(f"{len(captions)} videos but {len(groups)} group keys")
        members: dict[str, list[Pair]] = {}
        for entry in entries:  # shuffled already: each group's members in a shuffled order
            members.setdefault(groups[entry[0]], []).append(entry)
        keys = list(members)
        rng.shuffle(keys)
        entries = [entry for key in keys for entry in members[key]]
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    return [b for b in batches if len(b) > 1]


def true_negatives(
    videos: list[int],
    texts: list[str],
    mask_duplicates: bool,
    events: tuple[list[str | None], list[set[str | None]]] | None = None,
) -> Tensor:
    """(B, B) bool: caption i against video j is a negative. Always not for i == j; with
    ``mask_duplicates`` also not where j is the same video as i's (pairs of one video in a
    batch), where j's caption is the same text as i's (two videos one caption fits), or, given
    ``events`` (the event each caption tells, None if unknown; the events each video's
    captions tell), where video j shows the event caption i tells (overlapping windows of one
    long video): ranking them below the positive would punish a right answer."""
    b = len(videos)
    negatives = ~torch.eye(b, dtype=torch.bool)
    if mask_duplicates:
        vid = torch.tensor(videos)
        same_video = vid[:, None] == vid[None, :]
        ids: dict[str, int] = {}
        txt = torch.tensor([ids.setdefault(t, len(ids)) for t in texts])
        same_text = txt[:, None] == txt[None, :]
        negatives &= ~(same_video | same_text)
        if events is not None:
            told, shown = events
            shows = [[e is not None and e in shown[j] for j in range(b)] for e in told]
            negatives &= ~torch.tensor(shows, dtype=torch.bool)
    return negatives
