"""Evaluation: encode a split, score every caption against every video, the paper's metrics,
an ablation over alignment levels, and hard-distractor accuracy."""

from __future__ import annotations

import torch
from torch import Tensor

from model import scores as scoring
from model.config import SCORE_NAMES, SPEC_FUSION
from model.embeddings import TextEmbeddings, VideoEmbeddings
from model.hanet import HANet
from model.metrics import best_positive_ranks, pairwise_accuracy, retrieval_metrics
from model.preprocess import normalize_frames


def _weights(**levels: float) -> tuple[float, ...]:
    total = sum(levels.values())
    return tuple(levels.get(name, 0.0) / total for name in SCORE_NAMES)


ABLATIONS: dict[str, tuple[float, ...]] = {
    "global": _weights(**{"global": 1}),
    "global+individual": _weights(**{"global": 1, "individual_action": 1, "individual_entity": 1}),
    "global+local": _weights(**{"global": 1, "local_action": 1, "local_entity": 1}),
    "global+individual+local": _weights(**{n: 1 for n in SCORE_NAMES[:5]}),
    "global+concept": _weights(**{"global": 0.5, "concept_verb": 0.25, "concept_noun": 0.25}),
    "full": SPEC_FUSION,
    **{f"{n} alone": _weights(**{n: 1}) for n in SCORE_NAMES[1:]},
}


@torch.no_grad()
def encode_videos(
    model: HANet, frames: Tensor, mask: Tensor, batch: int = 32, following: Tensor | None = None
) -> VideoEmbeddings:
    """frames (N, T, S, S, 3) uint8, mask (N, T) -> embeddings, on the model's device;
    ``following``: the frames' motion partners (None: each frame's next)."""
    parts = []
    for i in range(0, len(frames), batch):
        pixels = normalize_frames(frames[i : i + batch], model.preprocess).to(model.device)
        partners = None
        if following is not None:
            partners = normalize_frames(following[i : i + batch], model.preprocess)
            partners = partners.to(model.device)
        parts.append(model.encode_video(pixels, mask[i : i + batch].to(model.device), partners))
    return VideoEmbeddings.cat(parts)


@torch.no_grad()
def encode_texts(model: HANet, texts: list[str], batch: int = 256) -> TextEmbeddings:
    return TextEmbeddings.cat(
        [model.encode_text(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    )


def caption_index(captions: list[list[str]]) -> tuple[list[str], Tensor]:
    """Unique caption texts and the (texts, videos) positives matrix (a text shared by several
    videos has several positives)."""
    texts: dict[str, int] = {}
    pairs = []
    for v, caps in enumerate(captions):
        for c in caps:
            pairs.append((texts.setdefault(c, len(texts)), v))
    positives = torch.zeros(len(texts), len(captions), dtype=torch.bool)
    for t, v in pairs:
        positives[t, v] = True
    return list(texts), positives


@torch.no_grad()
def evaluate(
    model: HANet,
    frames: Tensor,
    mask: Tensor,
    captions: list[list[str]],
    hard_pairs: dict[str, list[tuple[int, str, str]]] | None = None,
    with_ranks: bool = False,
    following: Tensor | None = None,
) -> dict:
    """The model's own fused score under the paper's protocol, plus ``ablation`` (each level
    alone and in combination, re-weighted from the same per-level scores) and ``hard``
    (accuracy of true vs distractor captions, e.g. mirrored actions, per ablation).
    ``with_ranks``: also ``t2v_ranks``, each unique caption's rank of its best video under the
    fused score (in ``caption_index`` order), for intervals over queries (model.bootstrap).
    ``following``: the videos' motion partners, as ``encode_videos`` takes them."""
    model.eval()
    video = encode_videos(model, frames, mask, following=following)
    texts, positives = caption_index(captions)
    levels = model.similarity(encode_texts(model, texts), video)
    result = retrieval_metrics(levels["fused"].cpu(), positives)
    if with_ranks:
        result["t2v_ranks"] = best_positive_ranks(levels["fused"].cpu(), positives).tolist()
    result["ablation"] = {
        name: retrieval_metrics(scoring.fuse(levels, w).cpu(), positives)
        for name, w in ABLATIONS.items()
    }
    if hard_pairs:
        result["hard"] = {
            kind: _hard_accuracy(model, video, pairs) for kind, pairs in hard_pairs.items() if pairs
        }
    return result


def _hard_accuracy(model: HANet, video: VideoEmbeddings, pairs: list[tuple[int, str, str]]) -> dict:
    index = torch.tensor([p[0] for p in pairs], device=video.global_.device)
    vids = video.select(index)
    true = _diagonal_levels(model, encode_texts(model, [p[1] for p in pairs]), vids)
    false = _diagonal_levels(model, encode_texts(model, [p[2] for p in pairs]), vids)
    out = {"pairs": len(pairs), "model": pairwise_accuracy(true["fused"], false["fused"])}
    for name in ("global", "global+individual+local", "full"):
        w = ABLATIONS[name]
        out[name] = pairwise_accuracy(scoring.fuse(true, w), scoring.fuse(false, w))
    return out


def _diagonal_levels(model: HANet, text: TextEmbeddings, video: VideoEmbeddings) -> dict:
    """Scores of text i with video i only (chunked, so memory stays linear)."""
    out: dict[str, list[Tensor]] = {}
    for i in range(0, len(text), 64):
        sl = slice(i, i + 64)
        s = model.similarity(text.select(sl), video.select(sl))
        for k, v in s.items():
            out.setdefault(k, []).append(v.diagonal().cpu())
    return {k: torch.cat(v) for k, v in out.items()}
