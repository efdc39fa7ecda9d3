"""Why a video matched a sentence, from HANet's own cross-attention, and per-query level weights.

For one sentence and one indexed unit: each verb phrase and argument phrase of the sentence,
the frames its individual-level attention put most weight on (with that weight), the cosine of
the attended frames with the phrase (the phrase's share of the individual score), and at the
local level the key segment it attended to most and its cosine. The scores are the ones the
rerank computes (``scores.cross_attention``), read per phrase instead of averaged."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from model import scores as scoring
from model.config import SCORE_NAMES
from model.decompose import Decomposition, Phrase
from model.embeddings import TextEmbeddings, VideoEmbeddings

# The levels a query may weigh, and the scores each one owns.
LEVELS: dict[str, tuple[str, ...]] = {
    "event": ("global",),
    "action": ("local_action", "individual_action"),
    "entity": ("local_entity", "individual_entity"),
    "concept": ("concept_verb", "concept_noun"),
}


def weighted_fusion(fusion: tuple[float, ...], weights: dict[str, float]) -> tuple[float, ...]:
    """The model's fusion weights with each level's scores multiplied by ``weights[level]``
    (a level not named keeps its weight; 0 turns it off). Raises ValueError for an unknown
    level, a negative weight, or weights that leave nothing to rank by."""
    unknown = set(weights) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown level {sorted(unknown)[0]!r}: levels are {', '.join(LEVELS)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError("level weights must be 0 or more")
    factor = {s: weights.get(level, 1.0) for level, names in LEVELS.items() for s in names}
    out = tuple(w * factor[name] for name, w in zip(SCORE_NAMES, fusion, strict=True))
    if not any(out):
        raise ValueError("these level weights give every score of the model weight 0")
    return out


@dataclass(frozen=True)
class PhraseMatch:
    """One phrase of the sentence against one unit."""

    text: str
    kind: str  # "action" (a verb phrase) or "entity" (an argument)
    role: str
    score: float  # cosine of the attended frames with the phrase (individual level)
    frames: tuple[tuple[int, float], ...]  # (frame index, attention weight), strongest first
    segment: int  # the key segment its local attention weighed most
    segment_weight: float
    segment_score: float  # cosine of the attended key segments with the phrase (local level)


def phrase_text(decomposition: Decomposition, phrase: Phrase) -> str:
    return " ".join(w.text for w in decomposition.words[phrase.start : phrase.end])


def _per_phrase(phrases: Tensor, mask: Tensor, units: Tensor, unit_mask, scale: float):
    """(P,) cosine of each phrase with its attended units and (P, F) attention, for one text and
    one unit (``scores.cross_attention`` read per phrase)."""
    _, attn = scoring.cross_attention(phrases[None], mask[None], units[None], unit_mask, scale)
    attn = attn[0, 0].float()  # (P, F)
    attended = attn @ units.float()
    return F.cosine_similarity(attended, phrases.float(), dim=-1), attn


def explain(
    text: TextEmbeddings,
    decomposition: Decomposition,
    unit: VideoEmbeddings,
    scale: float,
    top_frames: int = 3,
) -> list[PhraseMatch]:
    """The phrase matches of one sentence (``text`` of length 1 and its ``decomposition``)
    with one unit (``unit`` of length 1), verb phrases first, in sentence order."""
    if len(text) != 1 or len(unit) != 1:
        raise ValueError("explain takes one sentence and one unit")
    frame_mask = unit.frame_mask[:1]
    valid_frames = int(frame_mask.sum())
    out = []
    kinds = (
        ("action", decomposition.verbs, text.verb_phrases, text.verb_nodes, text.verb_mask,
         unit.action_frames, unit.action_segments),
        ("entity", decomposition.args, text.arg_phrases, text.arg_nodes, text.arg_mask,
         unit.entity_frames, unit.entity_segments),
    )  # fmt: skip
    for kind, phrases, individual, local, mask, frames, segments in kinds:
        count = min(len(phrases), int(mask[0].sum()))
        if count == 0:
            continue
        m = mask[0, :count]
        frame_score, frame_attn = _per_phrase(
            individual[0, :count], m, frames[0], frame_mask, scale
        )
        seg_score, seg_attn = _per_phrase(local[0, :count], m, segments[0], None, scale)
        for p, phrase in enumerate(phrases[:count]):
            weights, order = frame_attn[p, :valid_frames].sort(descending=True)
            seg = int(seg_attn[p].argmax())
            out.append(
                PhraseMatch(
                    text=phrase_text(decomposition, phrase),
                    kind=kind,
                    role=phrase.role,
                    score=round(float(frame_score[p]), 4),
                    frames=tuple(
                        (int(i), round(float(w), 4))
                        for i, w in zip(order[:top_frames], weights[:top_frames], strict=True)
                    ),
                    segment=seg,
                    segment_weight=round(float(seg_attn[p, seg]), 4),
                    segment_score=round(float(seg_score[p]), 4),
                )
            )
    return out


def encode_sentence(model, sentence: str) -> tuple[TextEmbeddings, Decomposition]:
    """A sentence's embeddings and decomposition, as ``explain`` takes them (``model``: a
    HANet)."""
    parsed = model.parse([sentence])
    with torch.no_grad():
        return model.encode_parsed(parsed), parsed.decompositions[0]


def explain_rows(model, sentence: str, unit: VideoEmbeddings, top_frames: int = 3):
    """``explain`` for a sentence as text, with ``model`` (a HANet) encoding it."""
    text, decomposition = encode_sentence(model, sentence)
    return explain(text, decomposition, unit, model.cfg.attention_scale, top_frames)
