"""The indexing job's reader: claimed videos decoded (PyAV) in worker processes, segment by
segment (``indexer.segments``).

``Reader.read(claims)`` starts decoding at once and returns a ``ReadBatch``; iterating it waits
for the results, so the job reads the next batch while the model works on this one. A long
video comes in chunks (a bounded stretch of segments each): when a chunk that is not the last
is taken, the next one starts decoding, so memory stays bounded whatever the video's length.
A video longer than one chunk is also cut into pieces (``SegmentCfg.piece_s``) that different
processes decode at the same time, each piece a chain of chunks, taken in the video's order.
Each read is a ``Decoded`` chunk or an ``Undecodable`` with the reason: a file that raises in
the decoder, or kills its worker process, costs that video only, never the batch. The processes
are forked, or spawned where they may decode on a GPU (``pool_context``)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing.context import BaseContext
from types import TracebackType

from db.queue import Claim
from indexer.decode import DecodeError, torch_sees_cuda
from indexer.segment_plan import TIE_S, piece_starts
from indexer.segments import SegmentCfg, SegmentChunk, decode_segments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Where:
    """Where a read starts in its video: at ``start_s`` seconds, its first segment being the
    video's ``first``-th (as far as known: a later piece's count is set when it is taken).
    ``end_s``: the end of its piece (None: the video's end); ``boundary``: ``start_s`` is a
    piece's start."""

    start_s: float = 0.0
    first: int = 0
    end_s: float | None = None
    boundary: bool = False


@dataclass(frozen=True)
class Decoded:
    video_id: int
    chunk: SegmentChunk
    first: int  # the video's segment number of chunk.segments[0]
    end_s: float | None = None  # the end of its piece (None: the video's end)

    @property
    def last(self) -> bool:
        """Whether the video ends with this chunk."""
        return self.chunk.next_start_s is None

    def following(self) -> Where | None:
        """Where the next chunk of this piece starts (None: this was the piece's last)."""
        start_s = self.chunk.next_start_s
        if start_s is None or (self.end_s is not None and start_s >= self.end_s - TIE_S):
            return None
        return Where(start_s, self.first + len(self.chunk.segments), self.end_s)


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
        chunk = decode_segments(
            claim.media_path, num_frames, size, cfg, where.start_s, where.end_s, where.boundary
        )
        return Decoded(claim.video_id, chunk, where.first, where.end_s)
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
    which is the job's own thread for the job's lifetime. SIGTERM is made fatal again: a forked
    process inherits the indexer's handler (finish the batch, then stop), with which the pool's
    ``terminate()`` of a broken pool's survivors would be ignored and its shutdown wait forever
    on a process blocked writing a result nobody reads."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # orphaned before the line above took effect
        os._exit(0)


def pool_context(
    cfg: SegmentCfg, cuda_visible: Callable[[], bool] = torch_sees_cuda
) -> BaseContext | None:
    """How the decoding processes start: the platform's way (None: fork on Linux), or spawned
    where they may decode on CUDA (``cfg.hwaccel``) and this process sees a CUDA device: a
    process forked from one that has used CUDA (the model, or the check itself) cannot."""
    if cfg.hwaccel == "none" or not cuda_visible():
        return None
    return multiprocessing.get_context("spawn")


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

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        context = pool_context(self.segments)
        return ProcessPoolExecutor(workers, context, initializer=die_with_parent)

    def _submit(self, pool: ProcessPoolExecutor, claim: Claim, where: Where) -> Future[Read]:
        args = (claim, self.num_frames, self.size, self.segments, where)
        return pool.submit(read_video, *args)


@dataclass(eq=False)
class _Piece:
    """A piece of a claimed video (all of it when it has no pieces), read chunk after chunk:
    ``where`` its next chunk not started yet (None: not known yet, or no more), ``started``
    the chunk decoding, ``reads`` those decoded and not taken yet."""

    claim: Claim
    where: Where | None
    plans: bool = False  # the video's first piece: its first read plans the others
    started: tuple[Where, Future[Read]] | None = None
    reads: deque[Read] = field(default_factory=deque)

    @property
    def held(self) -> int:
        return len(self.reads) + (self.started is not None)


class ReadBatch:
    """Claimed videos being decoded; iterate to wait for their chunks, in the claims' order and
    each video's. At most ``ahead`` chunks (one per claim, or the processes' count and one more
    if that is more), and the one waited for, are decoding or decoded and not yet taken, so
    memory stays bounded however long the videos. A video's first chunk, when the video goes
    on, plans its other pieces; the chunks of the earliest pieces start first."""

    def __init__(self, reader: Reader, claims: list[Claim]) -> None:
        self.reader, self.claims = reader, claims
        self.ahead = max(reader.workers + 1, len(claims))
        first = Where(end_s=reader.segments.piece_s or None)
        self._pieces = deque(_Piece(claim, first, plans=True) for claim in claims)
        self._taken: dict[int, int] = {}  # video -> its segments taken so far
        self._start()

    @property
    def video_ids(self) -> list[int]:
        return [c.video_id for c in self.claims]

    def __len__(self) -> int:
        return len(self.claims)

    def __iter__(self) -> Iterator[Read]:
        while self._pieces:
            piece = self._pieces[0]
            while not piece.reads and (piece.started or piece.where):
                self._start()
                wait([p.started[1] for p in self._pieces if p.started], return_when=FIRST_COMPLETED)
                self._settle()
            if not piece.reads:  # the piece is over
                self._pieces.popleft()
                continue
            read = self._number(piece.reads.popleft())
            self._settle()
            self._start()
            yield read

    def _start(self) -> None:
        """Start the next chunks known, the earliest pieces' first; the piece waited for always."""
        room = self.ahead - sum(p.held for p in self._pieces)
        for i, piece in enumerate(self._pieces):
            if piece.where is not None and piece.started is None and (room > 0 or i == 0):
                future = self.reader.submit(piece.claim, piece.where)
                piece.started, piece.where = (piece.where, future), None
                room -= 1

    def _settle(self) -> None:
        """Collect the chunks decoded; plan a video's pieces when its first chunk is in."""
        for piece in list(self._pieces):
            if piece.started is None or not piece.started[1].done():
                continue
            (where, future), piece.started = piece.started, None
            try:
                read = future.result()
            except BrokenProcessPool:  # this video's worker, or another of the pool, died
                read = self.reader.read_alone(piece.claim, where)
            piece.reads.append(read)
            if isinstance(read, Decoded):
                piece.where = read.following()
                if piece.plans and read.end_s is not None and not read.last:
                    self._plan(piece, read.chunk.duration_s)
            piece.plans = False

    def _plan(self, head: _Piece, duration_s: float) -> None:
        """The pieces after the first one, of a video of (declared) ``duration_s``; the last
        reads to the video's end, whatever the duration. None: the first piece reads on to
        the end (unless its first chunk reached its end already)."""
        starts = piece_starts(duration_s, self.reader.segments)[1:]
        if not starts and head.where is not None:
            head.where = replace(head.where, end_s=None)
            return
        starts = starts or [self.reader.segments.piece_s]
        at = self._pieces.index(head) + 1
        for start_s, end_s in reversed(list(zip(starts, [*starts[1:], None], strict=True))):
            where = Where(start_s, 0, end_s, boundary=True)
            self._pieces.insert(at, _Piece(head.claim, where))

    def _number(self, read: Read) -> Read:
        """``read`` with its first segment's number in its video; the video's other pieces
        dropped when it ended or could not be decoded further."""
        first = self._taken.get(read.video_id, 0)
        read = replace(read, first=first)
        if isinstance(read, Decoded):
            self._taken[read.video_id] = first + len(read.chunk.segments)
        if isinstance(read, Undecodable) or read.last:
            for piece in list(self._pieces)[1:]:
                if piece.claim.video_id == read.video_id:
                    if piece.started is not None:
                        piece.started[1].cancel()
                    self._pieces.remove(piece)
        return read
