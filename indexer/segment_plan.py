"""How a video is cut into segments, the index units of long videos: ``SegmentCfg`` and the
segmenting rules as a causal state machine (``SegmentPlanner``), which sees frame times and shot
boundaries and closes spans; ``plan_segments`` applies it to a known list of cuts. Decoding, shot
detection and the choice of frames are ``indexer.segments``'s.

The planner decides causally with a bounded look-ahead, so a video read in chunks gives the same
segments as one read in one go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")
HWACCELS = ("auto", "none", "cuda")  # SegmentCfg.hwaccel (indexer.decode.decode_hwaccel)
TIE_S = 1e-6  # times this close are equal; a tie between two frames goes to the earlier one


@dataclass(frozen=True)
class SegmentCfg:
    """How a video is cut into segments. Seconds throughout; ``threshold`` is on the scale of
    scenedetect's ContentDetector (mean HSV difference of consecutive frames). A call holds
    about ``(max_s + min_s) * sample_fps`` candidate frames with their successors, as ``size``
    squares, besides the segments it returns (about ``chunk_s`` of video)."""

    # Defaults chosen by `hanet eval-moments` (docs/benchmarks.md): units near the length of
    # the events the demo model was trained on localise better than long ones.
    min_s: float = 2.0  # shortest segment (a shorter shot joins the next one)
    max_s: float = 12.0  # longest segment; a video no longer than this is ONE segment
    window_s: float = 6.0  # a shot longer than max_s is cut into windows of this length
    overlap_s: float = 3.0  # windows overlap by this much (0 <= overlap_s < window_s)
    threshold: float = 27.0  # shot detector threshold
    chunk_s: float = 60.0  # at most about this much video decoded per call (memory bound)
    sample_fps: float = 8.0  # candidate frames kept per second of the open segment
    detect_width: int = 128  # frames shrink to this width (aspect kept) for shot detection
    # A video longer than max_s is decoded without its non-reference frames (most B-frames):
    # far less decoding where a codec has them; a sampled frame's successor is then the next
    # decoded frame, still a few frames away. A shorter video decodes every frame.
    skip_nonref: bool = True
    # A sampled frame's motion partner: the first decoded frame at least this much later (0:
    # the next decoded frame). A model learns motion at the spacing of its training frames:
    # the default is the demo recipe's (2-second clips, 8 frames); docs/benchmarks.md.
    partner_s: float = 0.25
    # The decoder's threading (FFmpeg's): "AUTO" (frame and slice threads), "FRAME", "SLICE"
    # or "NONE", with ``threads`` threads (0: FFmpeg's choice, one per core).
    thread_type: str = "AUTO"
    threads: int = 0
    # A video longer than one chunk is cut into pieces of this length (0: none), decoded in
    # parallel by the indexer's decoding processes and taken in order: the rules restart at
    # each piece's start, as after a cut, and a piece's last segment ends at its end.
    piece_s: float = 300.0
    # Hardware decoding (NVDEC through PyAV): "auto" where torch sees a CUDA device and PyAV
    # can create one, "cuda" wherever PyAV can create one, "none" never. Where it cannot, the
    # decoder is FFmpeg's software one (``indexer.decode.decode_hwaccel``).
    hwaccel: str = "auto"
    # The codec's in-loop deblocking (H.264, HEVC, VP9: FFmpeg's skip_loop_filter) is skipped
    # when False: less decoding, at the cost of small pixel changes that drift until the next
    # keyframe (measured in docs/benchmarks.md); decode_video (training) always deblocks.
    deblock: bool = True

    def __post_init__(self) -> None:
        finite = (self.min_s, self.max_s, self.window_s, self.overlap_s, self.threshold)
        problems = [] if all(map(math.isfinite, finite)) else ["values must be finite"]
        if not self.min_s > 0:
            problems.append(f"min_s must be > 0, not {self.min_s}")
        if not 0 <= self.overlap_s < self.window_s:
            problems.append("need 0 <= overlap_s < window_s")
        if not self.window_s - self.overlap_s >= self.min_s:
            problems.append("windows must advance by at least min_s (window_s - overlap_s)")
        if not self.window_s + self.min_s <= self.max_s:
            problems.append("window_s + min_s must not exceed max_s")
        if not (self.threshold > 0 and self.chunk_s > 0 and self.sample_fps > 0):
            problems.append("threshold, chunk_s and sample_fps must be > 0")
        if not 0 <= self.partner_s < math.inf:
            problems.append(f"partner_s must be finite and >= 0, not {self.partner_s}")
        if not (self.piece_s == 0 or self.max_s < self.piece_s < math.inf):
            problems.append(f"piece_s must be 0 or finite and > max_s, not {self.piece_s}")
        if self.thread_type not in THREAD_TYPES:
            problems.append(f"thread_type must be one of {THREAD_TYPES}, not {self.thread_type!r}")
        if self.hwaccel not in HWACCELS:
            problems.append(f"hwaccel must be one of {HWACCELS}, not {self.hwaccel!r}")
        if not self.threads >= 0:
            problems.append(f"threads must be >= 0, not {self.threads}")
        if not self.detect_width >= 8:
            problems.append(f"detect_width must be >= 8, not {self.detect_width}")
        if problems:
            raise ValueError("SegmentCfg: " + "; ".join(problems))


class SegmentPlanner:
    """The segmenting rules as a causal state machine. ``advance`` tells the time of the latest
    frame, ``cut`` a shot boundary there; a span closes as soon as no later frame can change it.

    - The open segment ends at its first cut at least ``min_s`` after its start (a shorter shot
      joins the next one) within its reach: ``max_s``, or ``window_s + min_s`` for a window.
      It closes ``min_s`` after that cut, so that a short final remainder of the video can still
      join it (when both fit in ``max_s``).
    - Past its reach without such a cut, it closes as a window of ``window_s``; the next window
      starts ``window_s - overlap_s`` later.
    - Nothing closes before the video is known to be longer than ``max_s``: a shorter video is
      one segment.

    After a close the state is only the next start and whether it is a window's. A window never
    starts at a cut and a segment after a cut always does, so a later call that starts there
    (knowing whether its start is a cut) reaches the same spans.
    """

    def __init__(self, cfg: SegmentCfg, start_s: float, windowing: bool) -> None:
        self.cfg = cfg
        self.start_s = start_s
        self.windowing = windowing
        self.cuts: list[float] = []  # cuts after start_s, increasing
        self.closed: list[tuple[float, float]] = []

    def cut(self, time_s: float) -> None:
        if time_s > self.start_s:
            self.cuts.append(time_s)

    def advance(self, position_s: float) -> None:
        cfg = self.cfg
        while not (self.start_s == 0 and position_s <= cfg.max_s):
            a, cut = self.start_s, self._first_cut()
            if cut is not None and position_s >= cut + cfg.min_s:
                self._close(a, cut, next_start_s=cut, windowing=False)
            elif cut is None and position_s > a + self._reach():
                self._close(a, a + cfg.window_s, a + cfg.window_s - cfg.overlap_s, True)
            else:
                return

    def finish(self, end_s: float) -> None:
        """The video ends at ``end_s``: close what is open."""
        self.advance(end_s)
        a, cut = self.start_s, self._first_cut()
        if end_s <= a:
            return
        if cut is not None and end_s - a > self.cfg.max_s:
            self._close(a, cut, cut, False)
            a = cut
        self._close(a, end_s, end_s, False)

    def _reach(self) -> float:
        return self.cfg.window_s + self.cfg.min_s if self.windowing else self.cfg.max_s

    def _first_cut(self) -> float | None:
        a = self.start_s
        cut = next((c for c in self.cuts if c >= a + self.cfg.min_s - TIE_S), None)
        return cut if cut is not None and cut <= a + self._reach() else None

    def _close(self, a: float, b: float, next_start_s: float, windowing: bool) -> None:
        self.closed.append((a, b))
        self.start_s, self.windowing = next_start_s, windowing
        self.cuts = [c for c in self.cuts if c > next_start_s]


def plan_segments(
    cuts: list[float], duration_s: float, cfg: SegmentCfg = SegmentCfg()
) -> list[tuple[float, float]]:
    """Segment spans of a video of ``duration_s`` with shot boundaries at ``cuts`` (seconds):
    the rules the indexer applies (see ``SegmentPlanner``), each piece of ``cfg.piece_s`` on its
    own (``piece_starts``). Spans tile [0, duration_s] in time order, overlapping only where
    windows do."""
    spans = []
    starts = piece_starts(duration_s, cfg)
    for a, b in zip(starts, [*starts[1:], duration_s], strict=True):
        planner = SegmentPlanner(cfg, a, windowing=False)
        for cut in sorted(set(cuts)):
            if a < cut < b:
                planner.advance(cut)
                planner.cut(cut)
        planner.finish(b)
        spans += planner.closed
    return spans


def piece_starts(duration_s: float, cfg: SegmentCfg) -> list[float]:
    """Where the pieces of a video of ``duration_s`` start: 0, then every ``cfg.piece_s`` at
    least ``min_s`` before its end (just 0 without pieces, ``piece_s`` = 0)."""
    if not cfg.piece_s:
        return [0.0]
    count = max(1, math.ceil((duration_s - cfg.min_s) / cfg.piece_s - TIE_S))
    return [k * cfg.piece_s for k in range(count)]
