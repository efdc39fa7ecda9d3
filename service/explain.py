"""`explain: true` in /search: for each hit, which phrase of the query matched which frames of
the hit's best segment, from HANet's own cross-attention (model.explain), in seconds."""

from __future__ import annotations

import numpy as np

from index.reader import Build
from model.explain import PhraseMatch, encode_sentence, explain
from model.hanet import HANet
from service.schemas import FrameWeight, PhraseReason, Span
from service.search import stretch_in_unit


def explain_units(
    model: HANet, build: Build, sentence: str, units: list[int], top_frames: int = 3
) -> list[list[PhraseReason]]:
    """The sentence's phrases against each of these indexed units (the hits' best moments'
    segments); the sentence is encoded once and the units' rows gathered at once."""
    if not units:
        return []
    text, decomposition = encode_sentence(model, sentence)
    rows, _ = build.rerank_rows(units)
    scale = model.cfg.attention_scale
    out = []
    for j, unit in enumerate(units):
        one = rows.select([j])
        times = np.asarray(build.frame_times(unit))[: int(one.frame_mask[0].sum())]
        spans, span = one.action_spans[0].tolist(), build.span(unit)
        out.append(
            [
                _reason(match, times, spans, span)
                for match in explain(text, decomposition, one, scale, top_frames)
            ]
        )
    return out


def _reason(match: PhraseMatch, times: np.ndarray, spans: list, span) -> PhraseReason:
    segment = None
    if match.kind == "action":
        start_s, end_s = stretch_in_unit(times, *spans[match.segment], span)
        segment = Span(start_s=start_s, end_s=end_s)
    return PhraseReason(
        phrase=match.text,
        kind=match.kind,
        role=match.role,
        score=match.score,
        frames=[FrameWeight(t_s=round(float(times[i]), 3), weight=w) for i, w in match.frames],
        segment=segment,
        segment_score=match.segment_score,
    )
