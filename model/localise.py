"""Where inside a unit a text happens: the moment a search returns, as a run of sampled frames.

Each sampled frame gets a relevance to the text from the same embeddings the rerank scores:
the mean of four cosines, the sentence vector and the verb nodes against the frame's action
embedding, the sentence vector and the argument nodes against its entity embedding (a text
without verb or argument phrases uses its sentence vector in their place). The moment is the
run of consecutive frames around the most relevant one whose relevance stays within
``share`` of the unit's range (peak minus ``share`` times peak minus lowest). The reasons and
the measurements behind the choice: docs/design.md, "Moments inside a unit".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.embeddings import TextEmbeddings, VideoEmbeddings

SHARE = 0.5  # how far below the peak (as a share of the unit's range) a frame still belongs


def _unit(x: Tensor) -> Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def _nodes_against(nodes: Tensor, mask: Tensor, frames: Tensor, fallback: Tensor) -> Tensor:
    """(N, P, D) nodes, (N, P) mask, (M, T, D) frames -> (N, M, T) mean cosine over each text's
    real nodes; ``fallback`` (N, M, T) for a text that has none."""
    per = torch.einsum("npd,mtd->nmpt", _unit(nodes), frames)
    weight = mask.float()[:, None, :, None]
    count = weight.sum(2)
    mean = (per * weight).sum(2) / count.clamp(min=1)
    return torch.where(count > 0, mean, fallback)


def frame_relevance(text: TextEmbeddings, video: VideoEmbeddings) -> Tensor:
    """(N, M, T) each sampled frame's relevance to each text (module doc); -inf on padding."""
    action, entity = _unit(video.action_frames), _unit(video.entity_frames)
    sentence = _unit(text.global_)
    by_action = torch.einsum("nd,mtd->nmt", sentence, action)
    by_entity = torch.einsum("nd,mtd->nmt", sentence, entity)
    by_verbs = _nodes_against(text.verb_nodes, text.verb_mask, action, by_action)
    by_args = _nodes_against(text.arg_nodes, text.arg_mask, entity, by_entity)
    relevance = (by_action + by_entity + by_verbs + by_args) / 4
    return relevance.masked_fill(~video.frame_mask.bool()[None], float("-inf"))


def peak_run(relevance: np.ndarray, share: float = SHARE) -> tuple[int, int]:
    """First and last index (inclusive) of the run of frames around the most relevant one
    whose relevance is at least peak - share * (peak - lowest); ``relevance`` holds one unit's
    valid frames. Ties go to the earliest peak."""
    if len(relevance) == 0:
        raise ValueError("a unit without frames has no moment")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    peak = int(np.argmax(relevance))
    top, low = float(relevance[peak]), float(np.min(relevance))
    floor = top - share * (top - low)
    first = last = peak
    while first > 0 and relevance[first - 1] >= floor:
        first -= 1
    while last < len(relevance) - 1 and relevance[last + 1] >= floor:
        last += 1
    return first, last


def moment_frames(
    text: TextEmbeddings, video: VideoEmbeddings, share: float = SHARE
) -> list[list[tuple[int, int]]]:
    """For each text and video, the first and last sampled frame (inclusive) of the moment:
    ``peak_run`` over ``frame_relevance``. (N texts) lists of (M videos) pairs."""
    with torch.no_grad():
        relevance = frame_relevance(text, video).numpy()
    valid = video.frame_mask.sum(1).tolist()
    return [
        [peak_run(relevance[n, m, : valid[m]], share) for m in range(relevance.shape[1])]
        for n in range(relevance.shape[0])
    ]
