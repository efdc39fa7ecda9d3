"""Long videos as segments: one forward decoding pass finds the shot boundaries (scenedetect's
ContentDetector on small copies of the frames), cuts the video into index units of ``min_s`` to
``max_s`` seconds (the rules of ``indexer.segment_plan``) and samples ``num_frames`` frames
inside each, as RGB squares exactly like ``decode_video``.

A long video is read in chunks of about ``chunk_s`` seconds, so memory stays bounded whatever
its length: a call returns the segments it closed and where the next call starts. Boundaries are
decided causally with a bounded look-ahead (``SegmentPlanner``), so a video read in chunks gives
the same segments as one read in one go.

The frames of the open segment cannot be chosen before its end is known, so the pass keeps
candidates: the decoded frame nearest each tick of a ``sample_fps`` grid, as ``size`` squares
with their successors. A segment's frames are the candidates nearest the centres of
``num_frames`` equal parts of it. A video whose headers say it is no longer than ``max_s`` is
sampled as ``decode_video`` samples it (the decoded frames nearest targets known in advance),
without the shot detector or the grid, which one segment does not need; should its frames go
on past ``max_s`` or stop well before the declared end, it is read again with both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain, count
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from indexer.decode import (
    DecodeError,
    declared_duration_s,
    decode_hwaccel,
    frame_time,
    open_media,
    pick_video_stream,
    sample_times,
    to_rgb_square,
)
from indexer.picker import NearestPicker, Pick
from indexer.segment_plan import TIE_S, SegmentCfg, SegmentPlanner, plan_segments

__all__ = ["DecodedSegment", "SegmentCfg", "SegmentChunk", "decode_segments", "plan_segments"]

log = logging.getLogger(__name__)

# A later call starts decoding this far before its start, so that the shot detector has seen
# the frame before the start and can tell whether the start is a cut.
_LOOKBACK_S = 1.0
# A declared duration at most this far past the end of the frames read is the video's end.
_END_SLACK_S = 1.0


@dataclass(frozen=True)
class DecodedSegment:
    """One index unit: its span in the video's own time (stream start = 0) and its frames.
    frames, following (n, S, S, 3) uint8 RGB, 1 <= n <= num_frames: the sampled frames and,
    for each, the decoded frame right after it (itself at the end of the stream);
    timestamps_s (n,) float64, increasing: the times of ``frames``."""

    start_s: float
    end_s: float
    frames: np.ndarray
    following: np.ndarray
    timestamps_s: np.ndarray


@dataclass(frozen=True)
class SegmentChunk:
    """What one ``decode_segments`` call read. ``next_start_s``: call again with this start to
    continue (the open segment's start; the call's ``end_s`` when it got there), None when the
    video ended. ``duration_s``: the declared
    duration, or the end actually read when that is later or nothing is declared.
    ``read_until_s``: the end of the video read so far (for progress). ``decoder``: "cuda"
    when NVDEC decoded the frames (``SegmentCfg.hwaccel``), else "software"."""

    segments: list[DecodedSegment]
    next_start_s: float | None
    duration_s: float
    read_until_s: float
    width: int
    height: int
    codec: str
    stream_index: int
    decoder: str = "software"


def _segment(picks: list[Pick], span: tuple[float, float], num_frames: int) -> DecodedSegment:
    """The picks nearest the centres of ``num_frames`` equal parts of ``span``, among those
    inside it (the frame on screen at its start when none is)."""
    a, b = span
    inside = [p for p in picks if a - TIE_S <= p.time_s < b]
    if not inside:
        inside = [p for p in picks if p.time_s < a][-1:]
    times = np.array([p.time_s for p in inside], dtype=np.float64)
    targets = a + sample_times(b - a, num_frames)
    after = np.clip(np.searchsorted(times, targets), 0, len(times) - 1)
    before = np.clip(after - 1, 0, len(times) - 1)
    earlier = targets - times[before] <= times[after] - targets + TIE_S
    chosen = np.unique(np.where(earlier, before, after))
    return DecodedSegment(
        start_s=a,
        end_s=b,
        frames=np.stack([inside[i].frame for i in chosen]),
        following=np.stack([inside[i].following for i in chosen]),
        timestamps_s=times[chosen],
    )


class _Squares:
    """``to_rgb_square`` of the latest frames, each converted once however many ask."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._reformatter = VideoReformatter()
        self._recent: list[tuple[av.VideoFrame, np.ndarray]] = []

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        for seen, image in self._recent:
            if seen is frame:
                return image
        image = to_rgb_square(frame, self.size, self._reformatter)
        self._recent = [(frame, image), *self._recent[:2]]
        return image


class _ShotDetector:
    """scenedetect's ContentDetector fed with ``width``-wide BGR copies of the frames. Its flash
    filter is off (``min_scene_len=0``): a verdict depends on a frame and its predecessor only,
    whatever came before, and the merging of short shots is the planner's."""

    def __init__(self, cfg: SegmentCfg, stream) -> None:
        from scenedetect.common import FrameTimecode, Timecode
        from scenedetect.detectors import ContentDetector

        self._detector = ContentDetector(threshold=cfg.threshold, min_scene_len=0)
        self._width = cfg.detect_width
        self._reformatter = VideoReformatter()
        self._timecode = lambda pts: FrameTimecode(
            Timecode(pts=pts, time_base=stream.time_base),
            fps=stream.average_rate or stream.guessed_rate or Fraction(25),
        )

    def is_cut(self, frame: av.VideoFrame) -> bool:
        width = min(self._width, frame.width)
        height = max(2, round(frame.height * width / frame.width))
        small = self._reformatter.reformat(
            frame, width=width, height=height, format="bgr24", interpolation="AREA"
        )
        return bool(
            self._detector.process_frame(self._timecode(frame.pts or 0), small.to_ndarray())
        )


class _NotAsDeclared(Exception):
    """A video read as its headers say, one segment sampled as ``decode_video`` samples it (no
    shot detector, no candidate grid), proves otherwise: it goes on past ``max_s``, or its
    frames end well before the declared end."""


class _SegmentReader:
    """One call's forward pass: decode from ``start_s`` (after one seek), detect cuts, keep the
    candidates of the open segment, and collect the segments as the planner closes them."""

    def __init__(
        self,
        container,
        stream,
        num_frames: int,
        size: int,
        cfg: SegmentCfg,
        start_s: float,
        detect: bool = True,
    ) -> None:
        self.container, self.stream, self.cfg = container, stream, cfg
        self.num_frames, self.start_s = num_frames, start_s
        self.end_s: float | None = None  # a piece's end: the segments end there, as at a video's
        self.boundary = False  # start_s is a segment boundary (a piece's start), cut or not
        self.origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        self.declared = declared_duration_s(container, stream)
        self.step_s = float(1 / (stream.average_rate or stream.guessed_rate or Fraction(25)))
        squares = _Squares(size)
        first_tick = math.ceil(max(0.0, start_s - _LOOKBACK_S) * cfg.sample_fps)
        ticks = (k / cfg.sample_fps for k in count(first_tick))
        self.grid = NearestPicker(ticks, squares, cfg.partner_s)
        self.exact: NearestPicker | None = None
        if start_s == 0 and self.declared is not None and 0 < self.declared <= cfg.max_s:
            self.exact = NearestPicker(iter(sample_times(self.declared, num_frames)), squares)
        # A video that is one segment needs neither cuts nor the grid's candidates: both run
        # only where the headers do not say so, or on a second pass once they prove wrong.
        self.trusting = self.exact is not None and not detect
        self.detector = None if self.trusting else _ShotDetector(cfg, stream)
        self.planner: SegmentPlanner | None = None
        self.segments: list[DecodedSegment] = []
        self.last_s: float | None = None  # time of the latest frame
        self.read_until_s = 0.0
        self.skipped_packets = 0
        self.ended = False  # the video ended
        self.at_end_s = False  # the piece ended at end_s

    def run(self) -> None:
        for frame in self._frames_from_start():
            time_s = self._time(frame)
            if self.last_s is not None and time_s <= self.last_s:
                continue  # out of order or repeated: the stream's times must increase
            if self.end_s is not None and time_s >= self.end_s - TIE_S:
                self.grid.push(time_s, frame)  # the motion partner of the last candidates
                self.at_end_s = True
                return self._end()
            self._take(time_s, frame)
            closed = self.planner.closed if self.planner else []
            if closed and closed[-1][1] - self.start_s >= self.cfg.chunk_s:
                return
        self._end()

    def _frames_from_start(self) -> Iterator[av.VideoFrame]:
        """The frames from a keyframe at or before ``start_s - _LOOKBACK_S``. Some demuxers
        (MPEG-TS) land on any packet before the target and the decoder then skips to the next
        keyframe, maybe past it: then seek further back, and at last read from the start."""
        target, back = self.start_s - _LOOKBACK_S, 0.0
        while target - back > 0:
            self._seek(target - back)
            frames = self._frames()
            first = next(frames, None)
            if first is None or self._time(first) <= target + TIE_S:
                return chain([first] if first is not None else [], frames)
            back = max(4 * back, 4 * _LOOKBACK_S)
        if target > 0:
            self._seek(0.0)
        return self._frames()

    def _seek(self, time_s: float) -> None:
        try:
            position = int((time_s + self.origin) / self.stream.time_base)
            self.container.seek(position, stream=self.stream, backward=True)
        except av.FFmpegError as exc:
            log.warning("cannot seek (%s): reading on", exc)

    def _frames(self) -> Iterator[av.VideoFrame]:
        """Every frame from the container's position on. A packet the decoder refuses (a
        corrupt stretch) is skipped; the first demuxing error ends the stream like its end."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                log.warning("reading stopped early at damaged data (%s)", exc)
                return
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.skipped_packets += 1
                continue
            yield from frames

    def _time(self, frame: av.VideoFrame) -> float:
        if frame.pts is None:  # no timestamp: one nominal frame after the previous one
            return 0.0 if self.last_s is None else self.last_s + self.step_s
        return frame_time(frame, self.stream) - self.origin

    def _take(self, time_s: float, frame: av.VideoFrame) -> None:
        cut = self.detector is not None and self.detector.is_cut(frame)
        if not self.trusting:
            self.grid.push(time_s, frame)
        if self.exact is not None:
            if time_s > min(self.cfg.max_s, self.declared + _END_SLACK_S):
                self.exact = None  # longer than declared or than one segment: not needed
            else:
                self.exact.push(time_s, frame)
        self.last_s = time_s
        duration = frame.duration * frame.time_base if frame.duration and frame.time_base else 0
        self.read_until_s = time_s + (float(duration) or self.step_s)
        if self.trusting and (self.exact is None or self.read_until_s > self.cfg.max_s):
            raise _NotAsDeclared  # cuts or the grid may matter now: read again with them
        if time_s < self.start_s - TIE_S:
            return  # before the start: seen by the detector and the grid only
        if self.planner is None:
            at_cut = cut and abs(time_s - self.start_s) <= TIE_S
            windowing = self.start_s > 0 and not (at_cut or self.boundary)
            self.planner = SegmentPlanner(self.cfg, self.start_s, windowing)
        self.planner.advance(time_s)
        if cut:
            self.planner.cut(time_s)
        if len(self.planner.closed) > len(self.segments):
            self._collect()

    def _collect(self) -> None:
        for span in self.planner.closed[len(self.segments) :]:
            self.segments.append(_segment(self.grid.picks, span, self.num_frames))
        self.grid.prune(self.planner.start_s)

    def _end(self) -> None:
        self.ended = not self.at_end_s
        if self.skipped_packets:
            log.warning("skipped %d packets the decoder refused", self.skipped_packets)
        if self.last_s is None and self.start_s == 0:
            raise DecodeError("no frame could be decoded (corrupt or truncated file)")
        self.grid.finish()
        if self.planner is None:
            return  # no frame at or after start_s: it is past the end
        end_s = self.end_s if self.at_end_s else self._end_of_video()
        self.planner.finish(end_s)
        one = self.planner.closed == [(0.0, end_s)] and end_s == self.declared
        if self.exact is not None and one:  # sampled in advance exactly as decode_video does
            self.exact.finish()
            self.segments.append(_segment(self.exact.picks, (0.0, end_s), self.num_frames))
        elif self.trusting:
            raise _NotAsDeclared  # ended early: its segment is sampled from the grid
        else:
            self._collect()

    def _end_of_video(self) -> float:
        """The declared duration when it ends just after the last frame, else the end read."""
        declared = self.declared
        if declared is not None and self.last_s < declared <= self.read_until_s + _END_SLACK_S:
            return declared
        return self.read_until_s

    def _decoder(self) -> str:
        """Who decoded the frames: "cuda" (NVDEC) when FFmpeg's decoder took the device's pixel
        format (it takes a software one when it falls back), else "software"."""
        ctx = self.stream.codec_context
        on_device = ctx.is_hwaccel and ctx.pix_fmt == "cuda" and self.last_s is not None
        return "cuda" if on_device else "software"

    def chunk(self) -> SegmentChunk:
        ctx = self.stream.codec_context
        return SegmentChunk(
            segments=self.segments,
            next_start_s=None
            if self.ended
            else self.end_s
            if self.at_end_s
            else self.planner.start_s,
            duration_s=max(self.declared or 0.0, self.read_until_s),
            read_until_s=self.read_until_s,
            width=ctx.width,
            height=ctx.height,
            codec=ctx.name,
            stream_index=self.stream.index,
            decoder=self._decoder(),
        )


def decode_segments(
    path: str | Path,
    num_frames: int,
    size: int,
    cfg: SegmentCfg = SegmentCfg(),
    start_s: float = 0.0,
    end_s: float | None = None,
    boundary: bool = False,
) -> SegmentChunk:
    """Decode the segments of ``path`` from ``start_s`` (0, or a previous chunk's
    ``next_start_s``) until they cover ``cfg.chunk_s`` or the video ends, each with up to
    ``num_frames`` frames as RGB ``size`` squares. A video no longer than ``cfg.max_s`` is one
    segment sampled exactly as ``decode_video`` samples it. ``DecodeError`` with the reason
    for a missing file, one that is not media, has no video stream or no decodable frame.

    A piece of a video (``indexer.reader``): ``boundary`` makes ``start_s`` a segment boundary
    (the rules restart there, as after a cut) and the segments end at ``end_s``, as at the
    video's end (then ``next_start_s`` is ``end_s``)."""
    if num_frames < 1 or size < 1 or not start_s >= 0 or not (end_s is None or end_s > start_s):
        raise ValueError("need num_frames >= 1, size >= 1 and 0 <= start_s < end_s")
    for detect in (False, True):  # the detector is left out while the headers are believed
        with open_media(Path(path), decode_hwaccel(cfg.hwaccel)) as container:
            stream = pick_video_stream(container)
            stream.thread_type = cfg.thread_type
            if cfg.threads:
                stream.codec_context.thread_count = cfg.threads
            if not cfg.deblock:  # before the decoder opens, at the first packet
                stream.codec_context.options = {"skip_loop_filter": "all"}
            args = (container, stream, num_frames, size, cfg, float(start_s), detect)
            reader = _SegmentReader(*args)
            reader.end_s, reader.boundary = end_s, boundary
            declared = reader.declared
            if cfg.skip_nonref and (declared is None or declared > cfg.max_s):
                stream.codec_context.skip_frame = "NONREF"
            try:
                reader.run()
            except _NotAsDeclared:
                log.info("%s: not the %.1f s its headers say: read again", path, declared)
                continue
            return reader.chunk()
    raise AssertionError("unreachable: the second pass detects cuts")
