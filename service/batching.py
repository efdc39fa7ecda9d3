"""Micro-batching on one worker thread: requests that arrive while a batch runs wait in a queue,
and the next batch takes all of them at once (up to a maximum), so that the work that costs
less per item in a batch (the text tower, FAISS) grows with load instead of queueing. A lone
request goes at once: nothing waits for a batch to fill. A request that waits longer than its
limit for its batch to start is refused (``Overloaded``) rather than left hanging."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Serve = Callable[[list[T]], Sequence["R | Exception"]]


class Overloaded(Exception):
    """A request waited longer than its limit for its batch to start."""

    def __init__(self, waited_s: float, limit_s: float) -> None:
        super().__init__(f"waited {waited_s:.1f} s for a turn (limit {limit_s:g} s)")
        self.waited_s, self.limit_s = waited_s, limit_s
        self.retry_after_s = max(1, math.ceil(limit_s))  # the queue's worth of waiting


@dataclass(eq=False)
class _Job(Generic[T, R]):
    serve: Serve
    item: T
    queued: float  # time.monotonic() when it joined the queue
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class BatchStats:
    """What a batcher has done so far (for metrics): batches run, requests served in them,
    requests refused after waiting too long, requests waiting now, and how many batches had
    each size (size -> batches)."""

    batches: int
    served: int
    overloaded: int
    waiting: int
    sizes: dict[int, int]


class Batcher(Generic[T, R]):
    """Runs ``serve(items)`` on ``executor`` (one thread: one batch at a time) for the items
    submitted while the previous batch ran, at most ``batch_max`` at once. ``serve`` returns
    one result per item, in order; an exception in that list is raised to its item's caller
    only, one raised by ``serve`` to every caller in the batch."""

    def __init__(self, executor: Executor, batch_max: int, wait_s: float) -> None:
        if batch_max < 1 or wait_s <= 0:
            raise ValueError("batch_max must be at least 1 and wait_s positive")
        self.executor, self.batch_max, self.wait_s = executor, batch_max, wait_s
        self._queue: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        self._served = self._overloaded = 0

    async def submit(self, serve: Serve, item: T) -> R:
        """``serve``'s result for ``item``, served in a batch with the other items waiting
        with the same ``serve``. Raises ``Overloaded`` when no batch took it within
        ``wait_s``; a cancelled caller's item is dropped unless its batch already started."""
        job: _Job = _Job(serve, item, time.monotonic())
        with self._lock:
            self._queue.append(job)
        # one drain per request: it serves whatever waits then (nothing, when an earlier
        # drain took this request along), so no request waits for a batch to fill
        try:
            self.executor.submit(self._serve_waiting)
        except RuntimeError:  # the executor was shut down: the service is stopping
            with self._lock:
                self._queue.remove(job)
            raise
        waiting = asyncio.wrap_future(job.future)
        try:
            done, _ = await asyncio.wait({waiting}, timeout=self.wait_s)
        except asyncio.CancelledError:
            job.future.cancel()  # a started batch finishes it; a waiting one is skipped
            raise
        if not done and job.future.cancel():  # not started in time: withdrawn from the queue
            self._count_overloaded()
            raise Overloaded(time.monotonic() - job.queued, self.wait_s)
        return await waiting

    def stats(self) -> BatchStats:
        with self._lock:
            return BatchStats(
                batches=sum(self._sizes.values()),
                served=self._served,
                overloaded=self._overloaded,
                waiting=len(self._queue),
                sizes=dict(self._sizes),
            )

    def _count_overloaded(self) -> None:
        with self._lock:
            self._overloaded += 1

    def _claim(self) -> list[_Job]:
        """The next batch: the waiting jobs with the first one's ``serve``, oldest first, each
        marked running (so a caller can no longer withdraw it). Jobs withdrawn by their caller
        are dropped; jobs that waited too long get ``Overloaded`` (a late event loop)."""
        batch: list[_Job] = []
        now = time.monotonic()
        with self._lock:
            kept: deque[_Job] = deque()
            while self._queue and len(batch) < self.batch_max:
                job = self._queue.popleft()
                if batch and job.serve is not batch[0].serve:
                    kept.append(job)
                elif job.future.set_running_or_notify_cancel():
                    if now - job.queued > self.wait_s:
                        self._overloaded += 1
                        job.future.set_exception(Overloaded(now - job.queued, self.wait_s))
                    else:
                        batch.append(job)
            self._queue.extendleft(reversed(kept))
            if batch:
                self._sizes[len(batch)] = self._sizes.get(len(batch), 0) + 1
                self._served += len(batch)
        return batch

    def _serve_waiting(self) -> None:
        """On the executor: serve one batch of what waits now, if anything does."""
        batch = self._claim()
        if not batch:
            return
        try:
            results = batch[0].serve([job.item for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as exc:
            log.exception("a batch of %d failed", len(batch))
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
