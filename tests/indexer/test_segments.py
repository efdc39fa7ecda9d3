"""Segments of long videos: plan_segments' rules without video, decode_segments on generated
files (hard cuts, variable frame rate, a lying header, corrupt data) and on ../shared/media
(skipped when absent)."""

from __future__ import annotations

import dataclasses
import math
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from indexer.decode import DecodeError, decode_video, sample_times
from indexer.segment_plan import piece_starts
from indexer.segments import (
    DecodedSegment,
    SegmentCfg,
    SegmentChunk,
    decode_segments,
    plan_segments,
)
from tests.indexer.test_decode import MEDIA, needs_media  # the shared real files
from tests.indexer.test_decode import VIDEOS as REAL_VIDEOS

FPS = 12
SIDE = 96  # generated frames are SIDE x SIDE; decoded at the same size, so pixels stay sharp
BITS = 12  # a frame's index is drawn as a Gray-coded bar of BITS blocks along the top
# Shot colours far apart in hue, saturation or brightness: each change is a hard cut (a
# ContentDetector score above 50, where the moving square and the bar score below 5).
PALETTE = [
    (230, 40, 40),
    (30, 110, 30),
    (40, 90, 220),
    (240, 240, 240),
    (60, 220, 220),
    (20, 20, 20),
    (250, 230, 60),
    (120, 20, 140),
]
# The main generated video: 96 s at 12 fps, a 1 s shot (9-10 s) that must join the next one,
# and a 39 s shot (31-70 s) longer than max_s that must be cut into windows.
CUTS_S = [9.0, 10.0, 25.0, 31.0, 70.0, 88.0]
DURATION_S = 96.0


def _cfg(**kw) -> SegmentCfg:
    """The segmentation these tests were written for (the service's defaults are shorter):
    2-30 s segments, 10 s windows without overlap, 300 s chunks; ``kw`` overrides."""
    return SegmentCfg(**{"max_s": 30.0, "window_s": 10.0, "overlap_s": 0.0, "chunk_s": 300.0, **kw})


# --- plan_segments: the rules -------------------------------------------------------------


def test_a_video_no_longer_than_max_s_is_one_segment() -> None:
    assert plan_segments([5.0, 10.0, 20.0], 25.0, _cfg()) == [(0.0, 25.0)]
    assert plan_segments([3.0, 29.0], 30.0, _cfg()) == [(0.0, 30.0)]
    assert plan_segments([], 0.5, _cfg()) == [(0.0, 0.5)]


def test_shots_are_segments_and_a_short_shot_joins_the_next() -> None:
    spans = plan_segments([10.0, 11.0, 25.0, 40.0, 40.5, 60.0], 80.0, _cfg())
    assert spans == [(0.0, 10.0), (10.0, 25.0), (25.0, 40.0), (40.0, 60.0), (60.0, 80.0)]


def test_a_long_shot_is_cut_into_windows() -> None:
    spans = plan_segments([10.0, 55.0], 60.0, _cfg())
    # 10-55 is 45 s: windows of 10 s and a remainder of 5 s
    windows = [(10.0, 20.0), (20.0, 30.0), (30.0, 40.0), (40.0, 50.0), (50.0, 55.0)]
    assert spans == [(0.0, 10.0), *windows, (55.0, 60.0)]
    # a remainder shorter than min_s stays with the last window
    assert plan_segments([10.0, 51.0], 60.0, _cfg())[4:] == [(40.0, 51.0), (51.0, 60.0)]
    assert plan_segments([], 40.0, _cfg()) == [
        (0.0, 10.0),
        (10.0, 20.0),
        (20.0, 30.0),
        (30.0, 40.0),
    ]


def test_windows_overlap() -> None:
    cfg = _cfg(overlap_s=2.0)
    spans = plan_segments([], 50.0, cfg)
    assert spans == [
        (0.0, 10.0),
        (8.0, 18.0),
        (16.0, 26.0),
        (24.0, 34.0),
        (32.0, 42.0),
        (40.0, 50.0),
    ]


def test_a_short_final_remainder_joins_the_last_segment_when_it_fits() -> None:
    assert plan_segments([20.0, 39.0], 40.0, _cfg()) == [(0.0, 20.0), (20.0, 40.0)]
    # 10-40.5 would be longer than max_s: the remainder stays on its own
    assert plan_segments([10.0, 39.5], 40.5, _cfg()) == [(0.0, 10.0), (10.0, 39.5), (39.5, 40.5)]


@pytest.mark.parametrize(
    "cfg",
    [_cfg(), _cfg(min_s=1.0, max_s=12.0, window_s=5.0, overlap_s=1.5)],
    ids=["default", "small-overlap"],
)
def test_random_plans_tile_the_video_within_the_bounds(cfg: SegmentCfg) -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        duration = float(rng.uniform(0.2, 400.0))
        cuts = sorted(rng.uniform(0, duration, size=rng.integers(0, 40)).tolist())
        spans = plan_segments(cuts, duration, cfg)
        pieces = piece_starts(duration, cfg)
        assert spans[0][0] == 0.0 and spans[-1][1] == duration
        if duration <= cfg.max_s:
            assert spans == [(0.0, duration)]
        for (a, b), (c, _) in zip(spans, spans[1:], strict=False):
            assert c <= b  # no gap
            if c != b:  # only windows overlap, by overlap_s
                assert b - a == pytest.approx(cfg.window_s) and b - c == pytest.approx(
                    cfg.overlap_s
                )
            assert b - a <= cfg.max_s
            # shorter than min_s: only a shot that starts less than min_s before a piece's end
            assert b - a >= cfg.min_s - 1e-6 or (a in cuts and b in pieces)
        assert spans[-1][1] - spans[-1][0] <= cfg.max_s + 1e-9
        inner = {b for _, b in spans[:-1]}
        # a boundary is a cut, the end of a window or a piece's start
        assert all(
            b in cuts or b in pieces or any(b == a + cfg.window_s for a, _ in spans) for b in inner
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"min_s": 0.0},
        {"overlap_s": 10.0},
        {"overlap_s": -1.0},
        {"window_s": 29.0},  # window_s + min_s > max_s
        {"overlap_s": 9.0},  # windows would advance by less than min_s
        {"threshold": 0.0},
        {"chunk_s": 0.0},
        {"sample_fps": float("nan")},
        {"max_s": float("inf")},
        {"detect_width": 4},
        {"partner_s": -0.1},
        {"partner_s": float("inf")},
        {"thread_type": "MANY"},
        {"threads": -1},
    ],
)
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="SegmentCfg"):
        SegmentCfg(**bad)


# --- generated videos ---------------------------------------------------------------------


def _image(index: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A shot-coloured frame with a square moving right and ``index`` as a bar of blocks."""
    image = np.empty((SIDE, SIDE, 3), np.uint8)
    image[:] = colour
    x = 8 + (2 * index) % 64
    image[48:72, x : x + 16] = [255 - v for v in colour]
    gray = index ^ (index >> 1)  # consecutive frames differ in one block
    for bit in range(BITS):
        image[:16, 8 * bit : 8 * bit + 8] = 255 if gray >> bit & 1 else 0
    return image


def _index(image: np.ndarray) -> int:
    """The frame index drawn by ``_image`` (``image`` decoded at SIDE x SIDE)."""
    gray = sum(1 << bit for bit in range(BITS) if image[8, 8 * bit + 4].mean() > 128)
    index = 0
    while gray:
        index ^= gray
        gray >>= 1
    return index


def _write(
    path: Path,
    cuts_s: list[float],
    duration_s: float,
    pts_ms: list[int] | None = None,
) -> Path:
    """An H.264 video with hard cuts at ``cuts_s``, each on a keyframe (as encoders often put
    them, and where a seek lands exactly): frame i at i / FPS s, or at ``pts_ms[i]``
    milliseconds (variable frame rate; then ``duration_s`` is ignored)."""
    times = (
        [p / 1000 for p in pts_ms] if pts_ms else [i / FPS for i in range(round(duration_s * FPS))]
    )
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.options = {"x264-params": "forced-idr=1"}
        if pts_ms:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, time_s in enumerate(times):
            shot = sum(time_s >= c - 1e-9 for c in cuts_s)
            frame = av.VideoFrame.from_ndarray(_image(i, PALETTE[shot % len(PALETTE)]), "rgb24")
            if any(abs(time_s - c) < 1e-9 for c in cuts_s):
                frame.pict_type = PictureType.I
            if pts_ms:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _read_all(path: Path, cfg: SegmentCfg, num_frames: int = 6) -> list[DecodedSegment]:
    """Every segment of ``path``, chunk after chunk."""
    segments, start, calls = [], 0.0, 0
    while start is not None:
        chunk = decode_segments(path, num_frames, SIDE, cfg, start_s=start)
        assert chunk.next_start_s is None or chunk.next_start_s > start
        segments += chunk.segments
        start, calls = chunk.next_start_s, calls + 1
        assert calls < 100
    return segments


def _spans(segments: list[DecodedSegment]) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in segments]


def _same_spans(spans: list[tuple[float, float]], expected: list[tuple[float, float]]) -> bool:
    return len(spans) == len(expected) and np.allclose(spans, expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("seg") / "cuts.mp4", CUTS_S, DURATION_S)


@pytest.fixture(scope="module")
def whole(cut_video: Path) -> SegmentChunk:
    return decode_segments(cut_video, 6, SIDE, _cfg(chunk_s=float("inf")))


def test_cuts_are_found_at_the_true_times(whole: SegmentChunk) -> None:
    assert whole.next_start_s is None
    assert whole.duration_s == pytest.approx(DURATION_S)
    assert (whole.width, whole.height, whole.codec) == (SIDE, SIDE, "h264")
    expected = plan_segments(CUTS_S, DURATION_S, _cfg())
    assert len(expected) == 9  # the short shot merged, the long one in windows
    assert _same_spans(_spans(whole.segments), expected)


def test_frames_are_sampled_inside_each_segment(whole: SegmentChunk) -> None:
    for segment in whole.segments:
        n = len(segment.frames)
        assert segment.frames.shape == segment.following.shape == (n, SIDE, SIDE, 3)
        assert segment.frames.dtype == np.uint8 and n == 6
        times = segment.timestamps_s
        assert np.all(np.diff(times) > 0)
        assert segment.start_s <= times[0] and times[-1] < segment.end_s
        targets = segment.start_s + sample_times(segment.end_s - segment.start_s, 6)
        # candidates lie at most half a grid tick from a tick, frames half a frame from it
        assert np.abs(times - targets).max() <= 1 / 16 + 1 / 24 + 1e-6
        # the pixels are those of the frames at these times
        assert [_index(f) for f in segment.frames] == np.round(times * FPS).astype(int).tolist()


def test_following_frames_are_the_successors(cut_video: Path) -> None:
    cfg = _cfg(chunk_s=float("inf"), skip_nonref=False, partner_s=0.0)
    every = decode_segments(cut_video, 6, SIDE, cfg)
    last = round(DURATION_S * FPS) - 1
    for segment in every.segments:
        for frame, following in zip(segment.frames, segment.following, strict=True):
            assert _index(following) == min(_index(frame) + 1, last)


def test_a_motion_partner_at_least_partner_s_later(cut_video: Path) -> None:
    cfg = _cfg(chunk_s=float("inf"), skip_nonref=False, partner_s=0.25)
    last = round(DURATION_S * FPS) - 1
    segments = decode_segments(cut_video, 6, SIDE, cfg).segments
    gaps = set()
    for segment in segments:
        for frame, following in zip(segment.frames, segment.following, strict=True):
            gaps.add(_index(following) - _index(frame))
            assert _index(following) == min(_index(frame) + math.ceil(0.25 * FPS), last)
    assert gaps == {math.ceil(0.25 * FPS)}  # no segment ends within partner_s of the video's end


def _reference_frames(path: Path) -> list[int]:
    """The indexes of the frames a decoder told to skip non-reference frames outputs."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        return [round(float(f.pts * f.time_base) * FPS) for f in container.decode(stream)]


def test_without_non_reference_frames_the_successor_is_the_next_decoded_one(
    cut_video: Path,
) -> None:
    decoded = _reference_frames(cut_video)
    assert 0 < len(decoded) < 0.8 * round(DURATION_S * FPS)  # the encoder made B-frames
    successor = dict(zip(decoded, [*decoded[1:], decoded[-1]], strict=True))
    cfg = _cfg(chunk_s=float("inf"), partner_s=0.0)
    for segment in decode_segments(cut_video, 6, SIDE, cfg).segments:
        indexes = [_index(f) for f in segment.frames]
        assert set(indexes) <= set(decoded)
        assert [_index(f) for f in segment.following] == [successor[i] for i in indexes]


def test_with_a_candidate_for_every_frame_the_nearest_frames_are_sampled(cut_video: Path) -> None:
    cfg = _cfg(sample_fps=FPS, chunk_s=float("inf"), skip_nonref=False)
    segments = decode_segments(cut_video, 7, SIDE, cfg).segments
    for segment in segments:
        a, b = segment.start_s, segment.end_s
        frame_times = np.arange(round(a * FPS), round(b * FPS)) / FPS
        targets = a + sample_times(b - a, 7)
        nearest = np.abs(frame_times[None, :] - targets[:, None]).argmin(axis=1)  # ties: earlier
        assert segment.timestamps_s == pytest.approx(frame_times[np.unique(nearest)], abs=1e-9)


@pytest.mark.parametrize("chunk_s", [15.0, 40.0])
def test_chunked_reading_gives_the_same_segments(
    cut_video: Path, whole: SegmentChunk, chunk_s: float
) -> None:
    chunked = _read_all(cut_video, _cfg(chunk_s=chunk_s))
    assert _spans(chunked) == _spans(whole.segments)
    for one, other in zip(chunked, whole.segments, strict=True):
        assert np.array_equal(one.timestamps_s, other.timestamps_s)
        assert np.array_equal(one.frames, other.frames)
        assert np.array_equal(one.following, other.following)


def _check_restarts(path: Path, whole: list[DecodedSegment]) -> None:
    """A call from any segment's start closes the segments the whole read did from there."""
    for i, segment in enumerate(whole):
        chunk = decode_segments(path, 6, SIDE, _cfg(chunk_s=1.0), segment.start_s)
        assert _spans(chunk.segments) == _spans(whole[i : i + len(chunk.segments)])
        assert np.array_equal(chunk.segments[0].frames, segment.frames)


def test_a_call_from_any_segment_start_continues_the_same_way(
    cut_video: Path, whole: SegmentChunk
) -> None:
    # a start at a cut (a keyframe here) continues as a shot, one inside a long shot as windows
    _check_restarts(cut_video, whole.segments)


def test_restarts_in_mpeg_ts_where_seeking_lands_past_keyframes(tmp_path: Path) -> None:
    path = _write(tmp_path / "cuts.ts", CUTS_S, DURATION_S)
    whole = decode_segments(path, 6, SIDE, _cfg(chunk_s=float("inf"))).segments
    assert _same_spans(_spans(whole), plan_segments(CUTS_S, DURATION_S, _cfg()))
    _check_restarts(path, whole)


def test_a_chunk_covers_at_least_chunk_s(cut_video: Path) -> None:
    chunk = decode_segments(cut_video, 6, SIDE, _cfg(chunk_s=15.0))
    assert chunk.segments[-1].end_s >= 15.0 and chunk.segments[-1].end_s < DURATION_S
    assert chunk.next_start_s == chunk.segments[-1].end_s
    assert chunk.read_until_s < DURATION_S and chunk.duration_s == pytest.approx(DURATION_S)


def test_overlapping_windows_read_in_chunks(tmp_path: Path) -> None:
    path = _write(tmp_path / "long_shot.mp4", [4.0], 40.0)
    cfg = _cfg(overlap_s=3.0, chunk_s=float("inf"))
    whole = decode_segments(path, 4, SIDE, cfg).segments
    assert _same_spans(_spans(whole), plan_segments([4.0], 40.0, cfg))
    assert whole[1].end_s - whole[2].start_s == pytest.approx(3.0)  # windows overlap
    chunked = _read_all(path, _cfg(overlap_s=3.0, chunk_s=5.0), num_frames=4)
    assert _spans(chunked) == _spans(whole)
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(chunked, whole, strict=True))


def test_a_short_video_is_one_segment_sampled_like_decode_video(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.mp4", [4.0, 9.0, 15.5], 21.0)
    chunk = decode_segments(path, 8, SIDE, _cfg())
    video = decode_video(path, 8, SIDE)
    assert chunk.next_start_s is None and len(chunk.segments) == 1
    (segment,) = chunk.segments
    assert (segment.start_s, segment.end_s) == (0.0, pytest.approx(21.0))
    assert np.array_equal(segment.timestamps_s, video.timestamps_s)
    assert np.array_equal(segment.frames, video.frames)


def test_variable_frame_rate(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pts_ms = [0, *np.cumsum(rng.choice([40, 80, 120, 400], size=600)).tolist()]  # ~90 s
    cut_ms = pts_ms[250]  # a cut where a frame starts
    path = _write(tmp_path / "vfr.mkv", [cut_ms / 1000], 0.0, pts_ms=pts_ms)
    segments = decode_segments(path, 5, SIDE, _cfg(chunk_s=float("inf"))).segments
    real = np.array(pts_ms) / 1000
    assert min(abs(s.start_s - cut_ms / 1000) for s in segments) < 1e-6
    for segment in segments:
        times = segment.timestamps_s
        assert np.all(np.diff(times) > 0)
        assert np.abs(times[:, None] - real[None, :]).min(axis=1).max() < 1e-6
        assert [_index(f) for f in segment.frames] == np.searchsorted(real, times - 1e-6).tolist()
    ends = [s.end_s for s in segments]
    assert [s.start_s for s in segments[1:]] == ends[:-1]


def test_a_header_that_declares_more_than_the_frames(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.mkv", [10.0, 20.0, 30.0, 45.0, 60.0], 90.0)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 5])  # the header still says 90 s
    chunk = decode_segments(cut, 4, SIDE, _cfg(chunk_s=float("inf")))
    assert chunk.next_start_s is None and chunk.duration_s == pytest.approx(90.0)
    assert 20.0 < chunk.read_until_s < 60.0
    assert chunk.segments[-1].end_s == pytest.approx(chunk.read_until_s)
    assert _same_spans(_spans(chunk.segments)[:2], [(0.0, 10.0), (10.0, 20.0)])
    chunked = _read_all(cut, _cfg(chunk_s=10.0), num_frames=4)
    assert _spans(chunked) == _spans(chunk.segments)
    past = decode_segments(cut, 4, SIDE, _cfg(), start_s=80.0)  # declared, but there are no frames
    assert past.segments == [] and past.next_start_s is None


def _declaring(path: Path, out: Path, duration_s: int) -> Path:
    """A copy of the MP4 ``path`` whose headers (mdhd and mvhd, version 0) declare
    ``duration_s``."""
    data = bytearray(path.read_bytes())
    for box in (b"mdhd", b"mvhd"):
        at = data.index(box)
        assert data[at + 4] == 0  # version 0: 32-bit timescale and duration
        (timescale,) = struct.unpack(">I", data[at + 16 : at + 20])
        data[at + 20 : at + 24] = struct.pack(">I", timescale * duration_s)
    out.write_bytes(bytes(data))
    return out


def test_a_header_that_declares_one_segment_of_a_longer_video(tmp_path: Path, caplog) -> None:
    """A video whose headers say it is one segment is read without the shot detector; when its
    frames go on past max_s it is read again with it: the same segments and frames as the
    same video with honest headers."""
    honest = _write(tmp_path / "honest.mp4", [10.0, 20.0, 30.0, 45.0, 60.0], 90.0)
    lying = _declaring(honest, tmp_path / "lying.mp4", 20)
    cfg = _cfg(chunk_s=float("inf"), skip_nonref=False)  # both decode every frame
    caplog.set_level("INFO", logger="indexer.segments")
    chunk = decode_segments(lying, 4, SIDE, cfg)
    assert "not the 20.0 s its headers say: read again" in caplog.text
    expected = decode_segments(honest, 4, SIDE, cfg)
    assert _spans(chunk.segments) == _spans(expected.segments)
    assert _same_spans(
        _spans(chunk.segments)[:5], [(0, 10), (10, 20), (20, 30), (30, 45), (45, 60)]
    )
    for got, want in zip(chunk.segments, expected.segments, strict=True):
        assert np.array_equal(got.frames, want.frames)
        assert np.array_equal(got.timestamps_s, want.timestamps_s)
    caplog.clear()
    short = _declaring(_write(tmp_path / "short.mp4", [5.0], 20.0), tmp_path / "s.mp4", 20)
    (segment,) = decode_segments(short, 4, SIDE, cfg).segments  # believed: one pass
    assert (segment.start_s, segment.end_s) == (0.0, 20.0) and "read again" not in caplog.text
    data = _write(tmp_path / "short.mkv", [5.0], 20.0).read_bytes()
    truncated = tmp_path / "truncated.mkv"  # the frames stop, the header still says 20 s
    truncated.write_bytes(data[: len(data) * 2 // 5])
    chunk = decode_segments(truncated, 4, SIDE, cfg)
    assert "not the 20.0 s its headers say: read again" in caplog.text
    (segment,) = chunk.segments  # sampled from the grid over what is there
    assert segment.start_s == 0.0 and segment.end_s == chunk.read_until_s < 15.0
    assert np.all(np.diff(segment.timestamps_s) > 0) and segment.timestamps_s[-1] < segment.end_s


def test_deblocking_can_be_left_out(tmp_path: Path) -> None:
    """Without the codec's in-loop filter: the same frames at the same times, a little blockier
    (grain at a high CRF, where the filter has most to do)."""
    rng = np.random.default_rng(0)
    grain = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    path = tmp_path / "grain.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "40"}
        for i in range(4 * FPS):
            frame = av.VideoFrame.from_ndarray(np.roll(grain, i, axis=1), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    (deblocked,) = decode_segments(path, 4, SIDE, _cfg()).segments
    (raw,) = decode_segments(path, 4, SIDE, _cfg(deblock=False)).segments
    assert np.array_equal(raw.timestamps_s, deblocked.timestamps_s)
    change = np.abs(raw.frames.astype(int) - deblocked.frames.astype(int))
    assert change.max() > 0 and change.mean() < 8  # the same pictures, filtered or not


def test_a_corrupt_stretch_is_skipped(tmp_path: Path, caplog) -> None:
    # Motion JPEG: every packet stands alone, so the frames after the junk decode again
    path = _with_junk(tmp_path / "v.mkv", "mjpeg", 480, junk=range(200, 230))
    chunk = decode_segments(path, 12, SIDE, _cfg(chunk_s=float("inf")))
    assert "skipped 30 packets" in caplog.text
    assert _same_spans(_spans(chunk.segments), [(0, 10), (10, 20), (20, 30), (30, 40)])
    times = np.concatenate([s.timestamps_s for s in chunk.segments])
    assert not np.any((times > 199.5 / FPS) & (times < 229.5 / FPS))
    frames = np.concatenate([s.frames for s in chunk.segments])
    assert [_index(f) for f in frames] == np.round(times * FPS).astype(int).tolist()


def test_a_start_past_the_end_gives_no_segment(cut_video: Path) -> None:
    chunk = decode_segments(cut_video, 4, SIDE, _cfg(), start_s=DURATION_S + 5)
    assert chunk.segments == [] and chunk.next_start_s is None


def test_bad_inputs_raise_decode_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="not found"):
        decode_segments(tmp_path / "gone.mp4", 4, SIDE, _cfg())
    (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
    with pytest.raises(DecodeError, match="not a readable media file"):
        decode_segments(tmp_path / "notes.mp4", 4, SIDE, _cfg())
    with av.open(str(tmp_path / "tone.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), "s16", "mono")
        frame.rate = 8000
        container.mux(stream.encode(frame))
    with pytest.raises(DecodeError, match="no video stream"):
        decode_segments(tmp_path / "tone.wav", 4, SIDE, _cfg())
    with pytest.raises(DecodeError, match="no frame could be decoded"):
        decode_segments(_with_junk(tmp_path / "junk.mkv", "libx264", 24, range(24)), 4, SIDE)


def _with_junk(path: Path, codec: str, frames: int, junk: range) -> Path:
    """A Matroska video (a shot every 10 s) whose packets number ``junk`` are random bytes."""
    rng = np.random.default_rng(1)
    images = [_image(i, PALETTE[i // (10 * FPS) % len(PALETTE)]) for i in range(frames)]
    pictures = [av.VideoFrame.from_ndarray(image, "rgb24") for image in images]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        packets = [p for picture in [*pictures, None] for p in stream.encode(picture)]
        for n, packet in enumerate(packets):
            if n in junk:
                bad = av.Packet(rng.bytes(packet.size))
                bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                bad.stream, packet = stream, bad
            container.mux(packet)
    return path


# --- real files ---------------------------------------------------------------------------


@needs_media
@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_real_samples_are_one_segment_equal_to_decode_video(name: str) -> None:
    chunk = decode_segments(MEDIA / name, 8, 64, _cfg())
    video = decode_video(MEDIA / name, 8, 64)
    assert chunk.next_start_s is None and len(chunk.segments) == 1  # all shorter than max_s
    (segment,) = chunk.segments
    assert segment.start_s == 0.0 and segment.end_s == pytest.approx(video.duration_s)
    assert np.array_equal(segment.timestamps_s, video.timestamps_s)
    assert np.array_equal(segment.frames, video.frames)
    assert (chunk.width, chunk.height, chunk.stream_index) == (
        video.width,
        video.height,
        video.stream_index,
    )


@needs_media
@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_real_samples_in_short_segments(name: str) -> None:
    cfg = _cfg(min_s=0.2, max_s=0.8, window_s=0.5, chunk_s=1.0, threshold=20.0)
    segments = _read_all(MEDIA / name, cfg, num_frames=3)
    duration = decode_segments(MEDIA / name, 1, 16, _cfg()).duration_s
    assert segments[0].start_s == 0.0 and segments[-1].end_s == pytest.approx(duration, abs=0.1)
    for segment in segments:
        assert 1 <= len(segment.frames) <= 3 and segment.frames.shape[1:] == (SIDE, SIDE, 3)
        assert segment.timestamps_s[0] >= 0 and segment.timestamps_s[-1] <= duration
        assert segment.frames.std() > 1  # real pictures


@needs_media
def test_every_decoder_threading_gives_the_same_segments() -> None:
    """FFmpeg's frame and slice threads change how fast, never what is decoded: the same
    frames, partners and times with every choice (reference frames only, and every frame)."""
    cfg = _cfg(min_s=0.2, max_s=0.8, window_s=0.5, chunk_s=2.0, threshold=20.0)
    for skip_nonref in (True, False):
        runs = [
            decode_segments(
                MEDIA / "nasa_13013.mp4",
                4,
                SIDE,
                dataclasses.replace(cfg, skip_nonref=skip_nonref, thread_type=kind, threads=n),
            ).segments
            for kind, n in (("NONE", 1), ("SLICE", 2), ("FRAME", 2), ("AUTO", 0))
        ]
        assert len(runs[0]) >= 2
        for other in runs[1:]:
            assert [(s.start_s, s.end_s) for s in other] == [(s.start_s, s.end_s) for s in runs[0]]
            for a, b in zip(runs[0], other, strict=True):
                assert np.array_equal(a.frames, b.frames)
                assert np.array_equal(a.following, b.following)
                assert np.array_equal(a.timestamps_s, b.timestamps_s)


def test_the_default_cut_keeps_a_twelve_second_video_whole_and_windows_a_long_shot() -> None:
    """The service's default segmentation (tuned by `hanet eval-moments`): up to 12 s is one
    segment; a longer shot without cuts becomes 6 s windows advancing by 3 s."""
    default = SegmentCfg()
    assert (default.min_s, default.max_s, default.window_s, default.overlap_s) == (2, 12, 6, 3)
    assert plan_segments([], 12.0, default) == [(0.0, 12.0)]
    windows = plan_segments([], 30.0, default)
    assert windows[0] == (0.0, 6.0) and windows[1] == (3.0, 9.0)
    assert windows[-1][1] == 30.0 and all(e - s <= 12.0 for s, e in windows)
