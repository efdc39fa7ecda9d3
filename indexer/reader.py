"""The indexing job's reader: claimed videos decoded (PyAV) in worker processes.

``Reader.read(claims)`` starts decoding at once and returns a ``ReadBatch``; iterating it waits
for the results, so the job reads the next batch while the model works on this one. Each video
gives a ``Decoded`` or an ``Undecodable`` with the reason: a file that raises in the decoder,
or kills its worker process, costs that video only, never the batch."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType

from db.queue import Claim
from indexer.decode import DecodedVideo, DecodeError, decode_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    video_id: int
    video: DecodedVideo


@dataclass(frozen=True)
class Undecodable:
    video_id: int
    reason: str  # for the row's failure_reason


Read = Decoded | Undecodable


def read_video(claim: Claim, num_frames: int, size: int) -> Read:
    """Decode one claimed video (in a worker process): ``num_frames`` RGB ``size`` squares."""
    try:
        return Decoded(claim.video_id, decode_video(claim.media_path, num_frames, size))
    except DecodeError as exc:
        return Undecodable(claim.video_id, str(exc))
    except Exception as exc:  # a decoder crash on a hostile file must not stop the batch
        return Undecodable(claim.video_id, f"cannot decode: {type(exc).__name__}: {exc}")


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

    def __init__(self, num_frames: int, size: int, workers: int = 2) -> None:
        self.num_frames, self.size, self.workers = num_frames, size, workers
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
        """Start decoding ``claims``; the batch's results come in the same order."""
        if self._pool is None:
            raise RuntimeError("Reader.read outside its `with` block")
        try:
            futures = [self._submit(self._pool, c) for c in claims]
        except BrokenProcessPool:  # a worker process died earlier: start new ones
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool(self.workers)
            futures = [self._submit(self._pool, c) for c in claims]
        return ReadBatch(self, claims, futures)

    def read_alone(self, claim: Claim) -> Read:
        """Decode one video in a process of its own: for the videos of a batch whose worker
        process died, so that only a file that kills its decoder again is undecodable."""
        with self._new_pool(1) as solo:
            try:
                return self._submit(solo, claim).result()
            except BrokenProcessPool:
                log.warning("the decoder's process died on video %d", claim.video_id)
                return Undecodable(claim.video_id, "cannot decode: the decoder process died")

    @staticmethod
    def _new_pool(workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, initializer=die_with_parent)

    def _submit(self, pool: ProcessPoolExecutor, claim: Claim) -> Future[Read]:
        return pool.submit(read_video, claim, self.num_frames, self.size)


class ReadBatch:
    """Claimed videos being decoded; iterate to wait for them, in the claims' order."""

    def __init__(self, reader: Reader, claims: list[Claim], futures: list[Future[Read]]) -> None:
        self.reader, self.claims, self._futures = reader, claims, futures

    @property
    def video_ids(self) -> list[int]:
        return [c.video_id for c in self.claims]

    def __len__(self) -> int:
        return len(self.claims)

    def __iter__(self) -> Iterator[Read]:
        for claim, future in zip(self.claims, self._futures, strict=True):
            try:
                yield future.result()
            except BrokenProcessPool:  # this video's worker, or another of the pool, died
                yield self.reader.read_alone(claim)
