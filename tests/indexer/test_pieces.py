"""Pieces of one long video (``SegmentCfg.piece_s``) decoded in parallel by the reader's
processes: the segments are the rules' with each piece on its own (the one-pass segments
except next to piece boundaries), the units come in the video's order, numbered from 0."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from db import queue
from db.queue import Claim
from index.reader import load_current
from index.vectors import unit_id
from indexer.job import IndexingCfg, run_indexing
from indexer.reader import Decoded, Reader
from indexer.segments import decode_segments, plan_segments
from model import HANet, get_config
from tests.indexer.test_long_videos import (
    CUTS_S,
    DURATION_S,
    LONG_ID,
    SEGMENTS,
    WHOLE,
    _queue,
    _row,
    _spans,
    _write,
)

PIECED = dataclasses.replace(SEGMENTS, piece_s=30.0)  # pieces [0, 30), [30, 60), [60, 72]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pieces")
    _write(folder / "long.mp4", CUTS_S, DURATION_S)
    _write(folder / "short.mp4", [3.0], 7.0)
    return folder


def test_pieces_change_only_the_segments_next_to_piece_boundaries() -> None:
    """The rules restart at 30 s and 60 s as after a cut: the segment open there ends there
    (20-31 becomes 20-30; the window 52-58 becomes 52-60), and a cut less than min_s after a
    piece's start joins the piece's first segment (31-40 becomes 30-40; 58-66, 60-66)."""
    one_pass = plan_segments(CUTS_S, DURATION_S, SEGMENTS)
    pieced = plan_segments(CUTS_S, DURATION_S, PIECED)
    assert [s for s in one_pass if s not in pieced] == [(20, 31), (31, 40), (52, 58), (58, 66)]
    assert [s for s in pieced if s not in one_pass] == [(20, 30), (30, 40), (52, 60), (60, 66)]


def test_pieces_are_read_in_parallel_and_taken_in_order(media) -> None:
    """Two processes, the long video's three pieces in chunks: its reads come in order,
    numbered on from the reads before, the last read last; then the short video's one read.
    Frames equal one pass's wherever the span is the same; the motion partners too, except
    in the last partner_s before a piece's end (there: the first frame at or after the end)."""
    claims = [Claim(1, str(media / "long.mp4")), Claim(2, str(media / "short.mp4"))]
    with Reader(8, 64, workers=2, segments=PIECED) as reader:
        reads = list(reader.read(claims))
    assert all(isinstance(r, Decoded) for r in reads)
    assert [r.video_id for r in reads] == [1] * (len(reads) - 1) + [2]
    longs = reads[:-1]
    assert [r.last for r in longs] == [False] * (len(longs) - 1) + [True]
    assert {r.end_s for r in longs} == {30.0, 60.0, None}  # every piece was read
    for before, after in zip(longs, longs[1:], strict=False):
        assert after.first == before.first + len(before.chunk.segments)
    segments = [s for r in longs for s in r.chunk.segments]
    spans = plan_segments(CUTS_S, DURATION_S, PIECED)
    flat = [t for span in _spans(segments) for t in span]
    assert flat == pytest.approx([t for span in spans for t in span], abs=1 / 10)  # 10 fps
    assert reads[-1].first == 0 and len(reads[-1].chunk.segments) == 1
    whole = {(round(s.start_s), round(s.end_s)): s for s in decode_segments(
        media / "long.mp4", 8, 64, WHOLE).segments}  # fmt: skip
    same = [s for s in segments if (round(s.start_s), round(s.end_s)) in whole]
    assert len(same) == 5
    for segment in same:
        other = whole[round(segment.start_s), round(segment.end_s)]
        assert np.array_equal(segment.timestamps_s, other.timestamps_s)
        assert np.array_equal(segment.frames, other.frames)
        late = segment.timestamps_s > 30.0 - PIECED.partner_s  # before the piece end at 30
        near = late & (segment.timestamps_s < 30.0)
        assert np.array_equal(segment.following[~near], other.following[~near])


def test_a_pieced_video_is_indexed_in_order_with_its_progress(media, tmp_path) -> None:
    """Indexed with two decoding processes: its units are the pieced segments in order, its
    progress only goes forward, and the row says all of it was read."""
    model = HANet(get_config("tiny")).eval()
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = _queue(url, [media / "long.mp4", media / "short.mp4"])
    seen, real = [], queue.progress

    def recording(engine_, video_id, **kw):
        seen.append(kw["indexed_s"])
        return real(engine_, video_id, **kw)

    cfg = IndexingCfg(decode_workers=2, batch_size=4, segments=PIECED)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "progress", recording)
        summary = run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    assert summary.indexed == 2 and not summary.failed
    build = load_current(tmp_path / "index")
    spans = [t for u in build.units(LONG_ID) for t in build.span(u)]
    want = [t for span in plan_segments(CUTS_S, DURATION_S, PIECED) for t in span]
    assert build.units(LONG_ID) == [unit_id(LONG_ID, i) for i in range(len(want) // 2)]
    assert spans == pytest.approx(want, abs=1 / 10)
    assert len(seen) >= 3 and seen == sorted(seen) and 0 < seen[-1] < DURATION_S
    row = _row(engine, LONG_ID)
    assert row.indexed_s == row.duration_s == pytest.approx(DURATION_S)
