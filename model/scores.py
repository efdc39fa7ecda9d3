"""The seven alignment scores and their fusion (spec section 4).

Every function takes precomputed, L2-normalised embeddings, so the service reranks stored
candidates with the very code that training and evaluation use. Shapes: N texts, M videos.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.config import CONCEPT_SCORES, EMBEDDING_SCORES, SCORE_NAMES
from model.embeddings import TextEmbeddings, VideoEmbeddings

_EPS = 1e-8


def cross_attention(
    phrases: Tensor, phrase_mask: Tensor, units: Tensor, unit_mask: Tensor | None, scale: float,
    norm: str = "auto",
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Text-to-video cross-attention score.

    phrases (N, P, D), phrase_mask (N, P), units (M, F, D), unit_mask (M, F) or None (all valid)
    -> scores (N, M), attention (N, M, P, F).

    g = cos(unit, phrase), clipped at 0, padded units masked, L2-normalised over units;
    a = softmax(scale * g); r = cos(sum_f a_f v_f, phrase); score = mean of r over valid
    phrases (0 without any). Uses cos(v_hat, s) = (sum_f a_f g_f) / |v_hat|. ``norm`` picks
    how |v_hat| is computed, the same number either way: "gram", |v_hat|^2 = a^T (V V^T) a,
    which never materialises v_hat (N x M x P x D; training batches, many phrases), or
    "direct", v_hat itself (cheaper when N * P <= F: one query against many videos, serving);
    "auto" takes the cheaper.
    """
    n, p, d = phrases.shape
    m, f, _ = units.shape
    if unit_mask is None:
        unit_mask = torch.ones(units.shape[:2], dtype=torch.bool, device=units.device)
    # (N, M, P, F) cosines, as one matrix product
    raw = (phrases.reshape(n * p, d) @ units.reshape(m * f, d).T).view(n, p, m, f)
    raw = raw.permute(0, 2, 1, 3)
    valid = unit_mask[None, :, None, :]
    g = raw.clamp(min=0).masked_fill(~valid, 0.0)
    g = g / g.norm(dim=-1, keepdim=True).clamp(min=_EPS)
    attn = torch.softmax((scale * g).masked_fill(~valid, float("-inf")), dim=-1)
    attn = torch.nan_to_num(attn, nan=0.0)  # a video without valid units
    if norm == "direct" or (norm == "auto" and n * p <= f):
        v_hat = attn.permute(1, 0, 2, 3).reshape(m, n * p, f) @ units  # (M, N*P, D)
        norm_sq = v_hat.square().sum(-1).view(m, n, p).permute(1, 0, 2)
    else:
        gram = units @ units.transpose(1, 2)  # (M, F, F)
        norm_sq = torch.einsum("nmpf,mfg,nmpg->nmp", attn, gram, attn)
    r = (attn * raw).sum(-1) / norm_sq.clamp(min=_EPS**2).sqrt()  # (N, M, P)
    pm = phrase_mask[:, None, :].to(r.dtype)
    scores = (r * pm).sum(-1) / pm.sum(-1).clamp(min=1)
    return scores, attn


def jaccard(text_probs: Tensor, video_probs: Tensor) -> Tensor:
    """Soft Jaccard sum_c min(p, q) / sum_c max(p, q): (N, K), (M, K) -> (N, M).
    With S = sum p + sum q and L1 = sum |p - q|: min-sum = (S - L1)/2, max-sum = (S + L1)/2."""
    l1 = torch.cdist(text_probs, video_probs, p=1)
    total = text_probs.sum(-1, keepdim=True) + video_probs.sum(-1).unsqueeze(0)
    return (total - l1) / (total + l1).clamp(min=_EPS)


def fuse(scores: dict[str, Tensor], weights: tuple[float, ...]) -> Tensor:
    """Weighted sum of the seven scores, in SCORE_NAMES order."""
    return sum(w * scores[name] for name, w in zip(SCORE_NAMES, weights, strict=True))


def similarity(
    text: TextEmbeddings, video: VideoEmbeddings, fusion: tuple[float, ...], scale: float,
    chunk: int = 64,
) -> dict[str, Tensor]:  # fmt: skip
    """Every level's score, (N, M) each: the seven scores, ``embedding`` (mean of the five
    embedding scores, the training score), ``concept`` (mean of the two Jaccard scores) and
    ``fused`` (weighted by ``fusion``). Texts are processed ``chunk`` at a time."""
    parts = [
        _similarity_chunk(text.select(slice(i, i + chunk)).without_empty_phrase_slots(), video,
                          scale)
        for i in range(0, len(text), chunk)
    ]  # fmt: skip
    scores = {name: torch.cat([p[name] for p in parts]) for name in SCORE_NAMES}
    scores["embedding"] = torch.stack([scores[n] for n in EMBEDDING_SCORES]).mean(0)
    scores["concept"] = torch.stack([scores[n] for n in CONCEPT_SCORES]).mean(0)
    scores["fused"] = fuse(scores, fusion)
    return scores


def _similarity_chunk(text: TextEmbeddings, video: VideoEmbeddings, scale: float) -> dict:
    local_action, _ = cross_attention(
        text.verb_nodes, text.verb_mask, video.action_segments, None, scale
    )
    local_entity, _ = cross_attention(
        text.arg_nodes, text.arg_mask, video.entity_segments, None, scale
    )
    individual_action, _ = cross_attention(
        text.verb_phrases, text.verb_mask, video.action_frames, video.frame_mask, scale
    )
    individual_entity, _ = cross_attention(
        text.arg_phrases, text.arg_mask, video.entity_frames, video.frame_mask, scale
    )
    return {
        "global": text.global_ @ video.global_.T,
        "local_action": local_action,
        "local_entity": local_entity,
        "individual_action": individual_action,
        "individual_entity": individual_entity,
        "concept_verb": jaccard(text.verb_probs, video.verb_probs),
        "concept_noun": jaccard(text.noun_probs, video.noun_probs),
    }


def best_action_segment(text: TextEmbeddings, video: VideoEmbeddings, scale: float) -> Tensor:
    """Where each text matched inside each video: (N, M) index of the action segment that won
    the local action attention (summed over the text's verb phrases). A text without verb
    phrases gets the segment closest to its sentence vector."""
    _, attn = cross_attention(text.verb_nodes, text.verb_mask, video.action_segments, None, scale)
    by_verbs = (attn * text.verb_mask[:, None, :, None]).sum(2)  # (N, M, S)
    by_sentence = torch.einsum("nd,msd->nms", text.global_, video.action_segments)
    has_verbs = text.verb_mask.any(-1)[:, None, None]
    return torch.where(has_verbs, by_verbs, by_sentence).argmax(-1)
