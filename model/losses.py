"""Training losses (spec section 5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossWeights:
    margin: float = 0.2
    concept_triplet: float = 0.1
    concept_bce: float = 0.01
    contrast: float = 1.0  # the contrast captions' hinge (training option, not the spec's)


def triplet_hardest(
    scores: Tensor, positives: Tensor, margin: float, negatives: Tensor | None = None
) -> Tensor:
    """Hinge ranking loss with the hardest negative in the batch, both directions (VSE++).

    scores (B_t, B_v) text-to-video similarities, positives (B_t, B_v) bool; each text has
    exactly one positive video (its own). ``negatives`` (B_t, B_v) bool, the pairs that count
    as negatives (default: every non-positive; ``model.batches.true_negatives`` leaves out
    duplicates). Returns the mean over texts plus the mean over videos."""
    negatives = ~positives if negatives is None else negatives
    pos = scores.masked_fill(~positives, 0.0).sum(1)  # (B_t,) each text's positive
    candidates = scores.masked_fill(~negatives, float("-inf"))
    t2v = (margin + candidates.max(dim=1).values - pos).clamp(min=0)  # hardest video per text
    # hardest text per video, against every positive pair of that video
    pos_of_video = scores.masked_fill(~positives, float("inf")).min(dim=0).values
    v2t = (margin + candidates.max(dim=0).values - pos_of_video).clamp(min=0)
    has_pos = positives.any(0)
    return t2v.mean() + v2t[has_pos].mean()


def triplet_all(
    scores: Tensor, positives: Tensor, margin: float, negatives: Tensor | None = None
) -> Tensor:
    """Hinge ranking loss summed over every negative, both directions (VSE0), averaged over
    pairs. From-scratch training warms up with it: the hardest negative alone gives a randomly
    initialised model almost no signal (VSE++ relies on pretrained features)."""
    negatives = ~positives if negatives is None else negatives
    pos_t = scores.masked_fill(~positives, 0.0).sum(1, keepdim=True)  # (B_t, 1)
    pos_v = scores.masked_fill(~positives, float("inf")).min(dim=0, keepdim=True).values
    t2v = (margin + scores - pos_t).clamp(min=0) * negatives
    v2t = (margin + scores - pos_v).clamp(min=0) * negatives * positives.any(0, keepdim=True)
    return (t2v.sum() + v2t.sum()) / negatives.sum().clamp(min=1)


def infonce(
    scores: Tensor, positives: Tensor, temperature: float, negatives: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE (CLIP's loss): per text, -log of its positives' share of the softmax
    of scores / temperature over its positives and negatives; the same per video; the mean of
    the two directions. Pairs neither positive nor negative take no part. (B_t, B_v) each."""
    negatives = ~positives if negatives is None else negatives
    logits = scores / temperature

    def one_way(logits: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        everything = logits.masked_fill(~(pos | neg), float("-inf")).logsumexp(dim=1)
        own = logits.masked_fill(~pos, float("-inf")).logsumexp(dim=1)
        has_pos = pos.any(1)
        return (everything - own)[has_pos].mean()

    return 0.5 * (
        one_way(logits, positives, negatives) + one_way(logits.T, positives.T, negatives.T)
    )


def contrast_hinge(scores: Tensor, video_of: Tensor, margin: float) -> Tensor:
    """Hinge loss of each contrast caption against its own video's true caption.

    scores (B + K, B): rows 0..B-1 the true captions (caption i belongs to video i), rows B..
    B+K-1 the contrast captions; video_of (K,) the video each contrast caption was made for.
    Mean over the K pairs of max(0, margin + s(contrast, v) - s(true, v))."""
    b = scores.shape[1]
    contrast = scores[b + torch.arange(len(video_of), device=scores.device), video_of]
    return (margin + contrast - scores[video_of, video_of]).clamp(min=0).mean()


def masked_bce(probs: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy over concepts where ``mask`` is True (concepts another caption of
    the same video names but this one does not are masked out). (B, K) each."""
    loss = F.binary_cross_entropy(
        probs.clamp(1e-6, 1 - 1e-6), labels.to(probs.dtype), reduction="none"
    )
    m = mask.to(probs.dtype)
    return (loss * m).sum() / m.sum().clamp(min=1)


def hanet_loss(
    scores: dict[str, Tensor],
    positives: Tensor,
    concept_probs: dict[str, Tensor],
    concept_labels: dict[str, tuple[Tensor, Tensor]],
    weights: LossWeights = LossWeights(),
    hardest: bool = True,
    negatives: Tensor | None = None,
    temperature: float | None = None,
) -> dict[str, Tensor]:
    """Spec loss: triplet on the mean embedding score + 0.1 x triplet on the concept score +
    0.01 x the masked BCEs; ``hardest`` False ranks against every negative instead (warm-up).
    With a ``temperature`` InfoNCE takes the two triplets' place (an option, not the spec's).
    ``negatives``: which non-positive pairs count (default all).
    ``concept_probs`` maps "video_verb", "video_noun", "text_verb", "text_noun" to (B, K)
    probabilities; ``concept_labels`` maps "verb" / "noun" to
    (labels, mask) for each text's caption (the video side uses its paired caption's)."""
    parts = {
        "triplet": ranking_loss(
            scores["embedding"], positives, weights, hardest, negatives, temperature
        ),
        "concept_triplet": ranking_loss(
            scores["concept"], positives, weights, hardest, negatives, temperature
        ),
    }
    bce = [
        masked_bce(probs, *concept_labels[name.split("_")[1]])
        for name, probs in concept_probs.items()
    ]
    parts["concept_bce"] = torch.stack(bce).sum() if bce else scores["embedding"].new_zeros(())
    parts["total"] = (
        parts["triplet"]
        + weights.concept_triplet * parts["concept_triplet"]
        + weights.concept_bce * parts["concept_bce"]
    )
    return parts


def ranking_loss(
    scores: Tensor,
    positives: Tensor,
    weights: LossWeights,
    hardest: bool = True,
    negatives: Tensor | None = None,
    temperature: float | None = None,
) -> Tensor:
    """The batch ranking loss: InfoNCE at ``temperature`` when given, else the hinge with the
    hardest negative (``hardest``) or every negative."""
    if temperature is not None:
        return infonce(scores, positives, temperature, negatives)
    ranking = triplet_hardest if hardest else triplet_all
    return ranking(scores, positives, weights.margin, negatives)
