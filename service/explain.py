"""`explain: true` in /search: for each hit, which phrase of the query matched which frames of
the hit's best segment, from HANet's own cross-attention (model.explain), in seconds."""

from __future__ import annotations

import numpy as np

from index.reader import Build
from model.explain import explain_rows
from model.hanet import HANet
from service.schemas import FrameWeight, PhraseReason, Span
from service.search import moment_seconds


def explain_unit(
    model: HANet, build: Build, sentence: str, unit: int, top_frames: int = 3
) -> list[PhraseReason]:
    """The sentence's phrases against one indexed unit (a hit's best moment's segment)."""
    rows, _ = build.rerank_rows([unit])
    valid = int(rows.frame_mask[0].sum())
    times = np.asarray(build.frame_times(unit))[:valid]
    first, last = build.span(unit)
    spans = rows.action_spans[0].tolist()
    out = []
    for match in explain_rows(model, sentence, rows, top_frames):
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
