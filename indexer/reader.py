"""The indexing job's reader: claimed videos decoded (PyAV) in worker processes, segment by
segment (``indexer.segments``).

``Reader.read(claims)`` starts decoding at once and returns a ``ReadBatch``; iterating it waits
for the results, so the job reads the next batch while the model works on this one. A long
video comes in chunks (a bounded stretch of segments each): when a chunk that is not the last
is taken, the next one starts decoding, so memory stays bounded whatever the video's length.
Each read is a ``Decoded`` chunk or an ``Undecodable`` with the reason: a file that raises in
the decoder, or kills its worker process, costs that video only, never the batch."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType

from db.queue import Claim
from indexer.decode import DecodeError
from indexer.segments import SegmentCfg, SegmentChunk, decode_segments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Where:
    """Where a read starts in its video: at ``start_s`` seconds, its first segment being the
    video's ``first``-th."""

    start_s: float = 0.0
    first: int = 0


@dataclass(frozen=True)
class Decoded:
    video_id: int
    chunk: SegmentChunk
    first: int  # the video's segment number of chunk.segments[0]

    @property
    def last(self) -> bool:
        """Whether the video ends with this chunk."""
        return self.chunk.next_start_s is None

    def following(self) -> Where | None:
        """Where the next chunk of this video starts (None: this was the last)."""
        if self.chunk.next_start_s is None:
            return None
        return Where(self.chunk.next_start_s, self.first + len(self.chunk.segments))


@dataclass(frozen=True)
class Undecodable:
    video_id: int
    reason: str  # for the row's failure_reason
    first: int = 0  # segments of the video read before this (0: nothing could be read)


Read = Decoded | Undecodable


def read_video(claim: Claim, num_frames: int, size: int, cfg: SegmentCfg, where: Where) -> Read:
    """Decode one chunk of a claimed video (in a worker process): its segments from
    ``where``, ``num_frames`` RGB ``size`` squares each."""
    try:
        chunk = decode_segments(claim.media_path, num_frames, size, cfg, start_s=where.start_s)
        return Decoded(claim.video_id, chunk, where.first)
    except DecodeError as exc:
        return Undecodable(claim.video_id, str(exc), where.first)
    except Exception as exc:  # a decoder crash on a hostile file must not stop the batch
        reason = f"cannot decode: {type(exc).__name__}: {exc}"
        return Undecodable(claim.video_id, reason, where.first)


def die_with_parent() -> None:
    """A decoding process's initializer: be killed when the process that started it dies (the
    indexer, or the start method's fork server, which ends with it), even by kill -9, rather
    than linger waiting for work: the pool's queue never reports a dead parent. Linux only
    (prctl PR_SET_PDEATHSIG); the signal comes when the thread that started the pool ends,
    which is the job's own thread for the job's lifetime."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # orphaned before the line above took effect
        os._exit(0)


class Reader:
    """Decoding processes for the job's lifetime (a context manager)."""

    def __init__(
        self, num_frames: int, size: int, workers: int = 2, segments: SegmentCfg | None = None
    ) -> None:
        self.num_frames, self.size, self.workers = num_frames, size, workers
        self.segments = segments or SegmentCfg()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Reader:
        self._pool = self._new_pool(self.workers)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:  # what was read ahead and not waited for is dropped
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def read(self, claims: list[Claim]) -> ReadBatch:
        """Start decoding ``claims``; the results come in the claims' order, a video's later
        chunks as soon as the one before is taken (``ReadBatch``)."""
        return ReadBatch(self, claims)

    def submit(self, claim: Claim, where: Where) -> Future[Read]:
        """Start decoding one chunk of a claimed video."""
        if self._pool is None:
            raise RuntimeError("Reader.read outside its `with` block")
        try:
            return self._submit(self._pool, claim, where)
        except BrokenProcessPool:  # a worker process died earlier: start new ones
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool(self.workers)
            return self._submit(self._pool, claim, where)

    def read_alone(self, claim: Claim, where: Where) -> Read:
        """Decode one chunk in a process of its own: for the videos of a batch whose worker
        process died, so that only a file that kills its decoder again is undecodable."""
        with self._new_pool(1) as solo:
            try:
                return self._submit(solo, claim, where).result()
            except BrokenProcessPool:
                log.warning("the decoder's process died on video %d", claim.video_id)
                reason = "cannot decode: the decoder process died"
                return Undecodable(claim.video_id, reason, where.first)

    @staticmethod
    def _new_pool(workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, initializer=die_with_parent)

    def _submit(self, pool: ProcessPoolExecutor, claim: Claim, where: Where) -> Future[Read]:
        args = (claim, self.num_frames, self.size, self.segments, where)
        return pool.submit(read_video, *args)


class ReadBatch:
    """Claimed videos being decoded; iterate to wait for their chunks. At most ``ahead``
    chunks (one per claim, or the processes' count and one more if that is more) are decoding
    or decoded and not yet taken, so memory stays bounded however long the videos; a taken
    chunk that is not its video's last queues the next one first."""

    def __init__(self, reader: Reader, claims: list[Claim]) -> None:
        self.reader, self.claims = reader, claims
        self.ahead = max(reader.workers + 1, len(claims))
        self._waiting = deque((claim, Where()) for claim in claims)
        self._started: deque[tuple[Claim, Where, Future[Read]]] = deque()
        self._start()

    def _start(self) -> None:
        while self._waiting and len(self._started) < self.ahead:
            claim, where = self._waiting.popleft()
            self._started.append((claim, where, self.reader.submit(claim, where)))

    @property
    def video_ids(self) -> list[int]:
        return [c.video_id for c in self.claims]

    def __len__(self) -> int:
        return len(self.claims)

    def __iter__(self) -> Iterator[Read]:
        while self._started:
            claim, where, future = self._started.popleft()
            try:
                read = future.result()
            except BrokenProcessPool:  # this video's worker, or another of the pool, died
                read = self.reader.read_alone(claim, where)
            if isinstance(read, Decoded) and (after := read.following()) is not None:
                self._waiting.appendleft((claim, after))
            self._start()
            yield read
