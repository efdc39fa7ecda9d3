"""`explain: true` in /search: for each hit, which phrase of the query matched which frames of
the hit's best segment, from HANet's own cross-attention (model.explain), in seconds."""

from __future__ import annotations

import numpy as np

from index.reader import Build
from model.explain import encode_sentence, explain
from model.hanet import HANet
from service.schemas import FrameWeight, PhraseReason, Span
from service.search import moment_seconds


def explain_units(
    model: HANet, build: Build, sentence: str, units: list[int], top_frames: int = 3
) -> list[list[PhraseReason]]:
    """The sentence's phrases against each of these indexed units (the hits' best moments'
    segments); the sentence is encoded once."""
    text, decomposition = encode_sentence(model, sentence)
    return [_reasons(model, build, text, decomposition, unit, top_frames) for unit in units]


def _reasons(model, build, text, decomposition, unit: int, top_frames: int) -> list[PhraseReason]:
    rows, _ = build.rerank_rows([unit])
    valid = int(rows.frame_mask[0].sum())
    times = np.asarray(build.frame_times(unit))[:valid]
    first, last = build.span(unit)
    spans = rows.action_spans[0].tolist()
    out = []
    scale = model.cfg.attention_scale
    for match in explain(text, decomposition, rows, scale, top_frames):
        segment = None
        if match.kind == "action":
            start, end = moment_seconds(times, *spans[match.segment])
            segment = Span(start_s=round(max(start, first), 3), end_s=round(min(end, last), 3))
        out.append(
            PhraseReason(
                phrase=match.text,
                kind=match.kind,
                role=match.role,
                score=match.score,
                frames=[
                    FrameWeight(t_s=round(float(times[i]), 3), weight=w) for i, w in match.frames
                ],
                segment=segment,
                segment_score=match.segment_score,
            )
        )
    return out
