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


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in ``b``'s dtype, the result in ``a``'s. The stored rerank rows are float16 and
    stay so (the product reads half the bytes of a float32 copy, and no copy is written); the
    result is float32 again. Same dtypes (training, evaluation): plain ``a @ b``."""
    if a.dtype == b.dtype:
        return a @ b
    return (a.to(b.dtype) @ b).to(a.dtype)


# The video fields that cross-attention attends over ("units").
UNIT_FIELDS = ("action_frames", "entity_frames", "action_segments", "entity_segments")


def gram(units: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """(M, F, D) units -> (M, F, F) Gram matrices U U^T, computed in ``dtype`` (default the
    units' own)."""
    u = units.to(dtype or units.dtype)
    return u @ u.transpose(1, 2)


def unit_grams(video: VideoEmbeddings) -> dict[str, Tensor]:
    """Every unit field's Gram matrices, in float32: all that cross-attention needs of the
    units besides one product with the phrases. An index keeps them beside its rerank rows, so
    a rerank reads each stored unit vector once (``similarity``'s ``grams``)."""
    return {name: gram(getattr(video, name), torch.float32) for name in UNIT_FIELDS}


def cross_attention(
    phrases: Tensor,
    phrase_mask: Tensor,
    units: Tensor,
    unit_mask: Tensor | None,
    scale: float,
    norm: str = "auto",
    grams: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Text-to-video cross-attention score.

    phrases (N, P, D), phrase_mask (N, P), units (M, F, D), unit_mask (M, F) or None (all valid)
    -> scores (N, M), attention (N, M, P, F).

    g = cos(unit, phrase), clipped at 0, padded units masked, L2-normalised over units;
    a = softmax(scale * g); r = cos(sum_f a_f v_f, phrase); score = mean of r over valid
    phrases (0 without any). Uses cos(v_hat, s) = (sum_f a_f g_f) / |v_hat|. ``norm`` picks
    how |v_hat| is computed, the same number either way: "gram", |v_hat|^2 = a^T (V V^T) a,
    which never materialises v_hat (N x M x P x D; training batches, many phrases), or
    "direct", v_hat itself (cheaper when N * P <= F: one query against many videos); "auto"
    takes the cheaper. ``grams`` (M, F, F), the units' Gram matrices computed beforehand
    (``unit_grams``; serving), makes it "gram" without reading the units a second time.
    ``units`` may be float16 (stored rerank rows): they are multiplied as they are, the
    results are in the phrases' dtype.
    """
    n, p, d = phrases.shape
    m, f, _ = units.shape
    if unit_mask is None:
        unit_mask = torch.ones(units.shape[:2], dtype=torch.bool, device=units.device)
    # (N, M, P, F) cosines, as one matrix product
    raw = _matmul(phrases.reshape(n * p, d), units.reshape(m * f, d).T).view(n, p, m, f)
    raw = raw.permute(0, 2, 1, 3)
    valid = unit_mask[None, :, None, :]
    g = raw.clamp(min=0).masked_fill(~valid, 0.0)
    g = g / g.norm(dim=-1, keepdim=True).clamp(min=_EPS)
    attn = torch.softmax((scale * g).masked_fill(~valid, float("-inf")), dim=-1)
    attn = torch.nan_to_num(attn, nan=0.0)  # a video without valid units
    if grams is None and (norm == "direct" or (norm == "auto" and n * p <= f)):
        weights = attn.permute(1, 0, 2, 3).reshape(m, n * p, f)
        v_hat = weights @ units.to(weights.dtype)  # (M, N*P, D)
        norm_sq = v_hat.square().sum(-1).view(m, n, p).permute(1, 0, 2)
    else:
        if grams is None:
            grams = gram(units, phrases.dtype)
        norm_sq = torch.einsum("nmpf,mfg,nmpg->nmp", attn, grams.to(attn.dtype), attn)
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


def jaccard_one(text_probs: Tensor, video_probs: Tensor) -> Tensor:
    """``jaccard`` of one text against many videos, (K,), (M, K) -> (M,): sum_c min(p, q)
    over S - that, in one pass over the videos' probabilities (cheaper than ``jaccard``'s
    distance matrix for a single text)."""
    low = torch.minimum(video_probs, text_probs).sum(-1)
    return low / (video_probs.sum(-1) + text_probs.sum() - low).clamp(min=_EPS)


def fuse(scores: dict[str, Tensor], weights: tuple[float, ...]) -> Tensor:
    """Weighted sum of the seven scores, in SCORE_NAMES order."""
    return sum(w * scores[name] for name, w in zip(SCORE_NAMES, weights, strict=True))


def weights_of(rank_by: str, fusion: tuple[float, ...]) -> tuple[float, ...]:
    """The score ``similarity`` names ``rank_by`` as weights of the seven scores (in
    SCORE_NAMES order): ``fusion`` for "fused", equal shares for "embedding" and "concept"
    (their means), one score's own weight 1 for its name."""
    if rank_by == "fused":
        return tuple(fusion)
    group = {"embedding": EMBEDDING_SCORES, "concept": CONCEPT_SCORES}.get(rank_by, (rank_by,))
    if not set(group) <= set(SCORE_NAMES):
        raise ValueError(f"no score named {rank_by!r}")
    return tuple(1 / len(group) if name in group else 0.0 for name in SCORE_NAMES)


def similarity(
    text: TextEmbeddings,
    video: VideoEmbeddings,
    fusion: tuple[float, ...],
    scale: float,
    chunk: int = 64,
    grams: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Every level's score, (N, M) each: the seven scores, ``embedding`` (mean of the five
    embedding scores, the training score), ``concept`` (mean of the two Jaccard scores) and
    ``fused`` (weighted by ``fusion``). Texts are processed ``chunk`` at a time. ``grams``:
    the videos' ``unit_grams``, when stored (the same scores, less reading)."""
    parts = [
        _similarity_chunk(
            text.select(slice(i, i + chunk)).without_empty_phrase_slots(), video, scale, grams
        )
        for i in range(0, len(text), chunk)
    ]
    scores = {name: torch.cat([p[name] for p in parts]) for name in SCORE_NAMES}
    scores["embedding"] = torch.stack([scores[n] for n in EMBEDDING_SCORES]).mean(0)
    scores["concept"] = torch.stack([scores[n] for n in CONCEPT_SCORES]).mean(0)
    scores["fused"] = fuse(scores, fusion)
    return scores


def _similarity_chunk(
    text: TextEmbeddings,
    video: VideoEmbeddings,
    scale: float,
    grams: dict[str, Tensor] | None = None,
) -> dict:
    grams = grams or {}
    local_action, _ = cross_attention(
        text.verb_nodes,
        text.verb_mask,
        video.action_segments,
        None,
        scale,
        grams=grams.get("action_segments"),
    )
    local_entity, _ = cross_attention(
        text.arg_nodes,
        text.arg_mask,
        video.entity_segments,
        None,
        scale,
        grams=grams.get("entity_segments"),
    )
    individual_action, _ = cross_attention(
        text.verb_phrases,
        text.verb_mask,
        video.action_frames,
        video.frame_mask,
        scale,
        grams=grams.get("action_frames"),
    )
    individual_entity, _ = cross_attention(
        text.arg_phrases,
        text.arg_mask,
        video.entity_frames,
        video.frame_mask,
        scale,
        grams=grams.get("entity_frames"),
    )
    return {
        "global": _matmul(text.global_, video.global_.T),
        "local_action": local_action,
        "local_entity": local_entity,
        "individual_action": individual_action,
        "individual_entity": individual_entity,
        "concept_verb": jaccard(text.verb_probs, video.verb_probs),
        "concept_noun": jaccard(text.noun_probs, video.noun_probs),
    }
