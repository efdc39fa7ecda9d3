"""The frames a segment may be sampled from: the decoded frame nearest each of a sequence of
target times, with its motion partner (``NearestPicker``), for ``indexer.segments``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from indexer.segment_plan import TIE_S


@dataclass
class Pick:
    time_s: float
    frame: np.ndarray  # (S, S, 3)
    following: np.ndarray | None = None  # its successor, once decoded


class NearestPicker:
    """For each of an increasing sequence of target times, the decoded frame nearest it (a tie
    goes to the earlier frame, as in ``decode_video``) with its motion partner: the first
    decoded frame at least ``partner_s`` after it (0: its successor), both converted by
    ``convert``. Frames are pushed in stream order; a frame nearest several targets is kept
    once."""

    def __init__(self, targets: Iterator[float], convert: Callable, partner_s: float = 0.0) -> None:
        self._targets = targets
        self._target = next(targets, None)
        self._convert = convert
        self._partner_s = partner_s
        self._prev: tuple[float, av.VideoFrame] | None = None
        self._waiting: list[Pick] = []  # picks whose partner has not come yet, oldest first
        self.picks: list[Pick] = []

    def push(self, time_s: float, frame: av.VideoFrame) -> None:
        """The next decoded frame."""
        self._partner(time_s, frame)
        while self._target is not None and time_s + TIE_S >= self._target:
            prev = self._prev
            if prev is not None and self._target - prev[0] <= time_s - self._target + TIE_S:
                self._add(*prev)
                self._partner(time_s, frame)
            else:
                self._add(time_s, frame)
            self._target = next(self._targets, None)
        self._prev = (time_s, frame)

    def _partner(self, time_s: float, frame: av.VideoFrame) -> None:
        """``frame`` is the partner of the waiting picks it comes late enough after."""
        while (
            self._waiting
            and time_s > self._waiting[0].time_s + TIE_S
            and (time_s + TIE_S >= self._waiting[0].time_s + self._partner_s)
        ):
            self._waiting.pop(0).following = self._convert(frame)

    def finish(self) -> None:
        """The stream ended: targets left get the last frame; picks still waiting get the last
        frame as their partner (the last frame is its own)."""
        if self._target is not None and self._prev is not None:
            self._add(*self._prev)
        for pick in self._waiting:
            last_s, last = self._prev
            pick.following = self._convert(last) if last_s > pick.time_s else pick.frame
        self._waiting = []

    def prune(self, before_s: float) -> None:
        """Forget picks before ``before_s``, except the last one (the frame on screen then)."""
        first = next((i for i, p in enumerate(self.picks) if p.time_s >= before_s - TIE_S), None)
        keep_from = len(self.picks) - 1 if first is None else max(0, first - 1)
        del self.picks[:keep_from]

    def _add(self, time_s: float, frame: av.VideoFrame) -> None:
        if self.picks and self.picks[-1].time_s >= time_s:
            return
        pick = Pick(time_s, self._convert(frame))
        self._waiting.append(pick)
        self.picks.append(pick)
