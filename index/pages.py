"""Paging advice for memory-mapped rerank rows that do not fit in memory.

A build's rows are memory-mapped (index.reader). When they fit, ``Build.warm`` reads them in
once and searches find them in memory. When they do not (a library larger than the page cache
can hold), each search faults its candidates' rows in from disk, and two kernel defaults then
work against it:

- read-around: a fault on a file mapping reads the block device's readahead window around the
  faulted page (``/sys/block/<dev>/queue/read_ahead_kb``: 128 KB on many machines, megabytes on
  some virtual disks), so a 10 KB row costs a window's read and evicts rows other searches
  need; ``go_cold`` advises MADV_RANDOM: a fault reads its own pages only;
- one fault at a time: a search's gather touches its 200 candidates' rows one after another, in
  each of a part's files, and waits for every read in turn; ``prefetch`` first advises
  MADV_WILLNEED over every candidate row of every file, so the kernel starts all those reads
  at once and the gather then waits for the slowest, not for their sum.

And a cold build's process unmaps what it has read (``go_cold``: the load's pass over the
probabilities; ``release``: each search's rows, once copied out), so its resident memory is
its own, not the page cache's: the pages stay cached for the next search that wants them.

A prefetch advises each array's ranges in one system call (process_madvise, Linux 5.10 and
later) where the kernel takes it, else one madvise per range. Linux only (through libc);
elsewhere every call here does nothing. Advice never changes what is read, only when: a
search's results are the same either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
from collections.abc import Iterator

import numpy as np

PAGE = mmap.PAGESIZE
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _LIBC is not None:
    _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _LIBC.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    _LIBC.syscall.restype = ctypes.c_long
# System call numbers, the same on x86-64 and arm64 (the generic table from 5.x on)
_PIDFD_OPEN, _PROCESS_MADVISE = 434, 440
_MAX_IOV = 1024  # ranges one process_madvise takes (UIO_MAXIOV)


class RowPaging:
    """How a build's memory-mapped rows are read: warm (read in at load, the default) or cold
    (too large to read in: random access advised, each search's rows prefetched). Builds that
    share one set of mapped rows (a delete's version) share one of these."""

    def __init__(self) -> None:
        self.cold = False

    def go_cold(self, arrays: list[np.ndarray]) -> None:
        """The rows will not be read in: advise random access over every mapped array, and
        unmap what is mapped now (the concept lists' pass over the probabilities, made at
        load): the pages stay in the page cache, the process holds only what searches fault
        in again."""
        for array in arrays:
            advise(array, mmap.MADV_RANDOM)
            advise(array, mmap.MADV_DONTNEED)  # read-only shared maps: nothing is lost
        self.cold = True

    def prefetch(self, parts: list[dict[str, np.ndarray]], where: np.ndarray) -> int:
        """When cold, start reading the rows at (part, row) pairs (``where``, (N, 2)) of every
        array of their parts; returns the ranges advised (0 when warm)."""
        return _advise_plan(_plan(parts, where), mmap.MADV_WILLNEED) if self.cold else 0

    def release(self, parts: list[dict[str, np.ndarray]], where: np.ndarray) -> int:
        """When cold, unmap those rows again once a search has copied them out: they stay in
        the page cache (the next search to want them finds them there), and the process's
        resident memory stays its own rather than growing with every row ever searched."""
        return _advise_plan(_plan(parts, where), mmap.MADV_DONTNEED) if self.cold else 0

    @contextlib.contextmanager
    def reading(self, parts: list[dict[str, np.ndarray]], where: np.ndarray) -> Iterator[None]:
        """Around a search's copy of its rows: when cold, ``prefetch`` before and ``release``
        after, over ranges worked out once."""
        plan = _plan(parts, where) if self.cold else []
        _advise_plan(plan, mmap.MADV_WILLNEED)
        try:
            yield
        finally:
            _advise_plan(plan, mmap.MADV_DONTNEED)


Plan = list[tuple[np.ndarray, np.ndarray]]  # (array, its ranges to advise: ``row_ranges``)


def _plan(parts: list[dict[str, np.ndarray]], where: np.ndarray) -> Plan:
    """The byte ranges of the rows at (part, row) pairs, per array of their parts."""
    plan = []
    for part in np.unique(where[:, 0]).tolist():
        rows = np.unique(where[where[:, 0] == part, 1])
        plan.extend((array, row_ranges(array, rows)) for array in parts[part].values())
    return plan


def _advise_plan(plan: Plan, advice: int) -> int:
    return sum(_advise_ranges(array, ranges, advice) for array, ranges in plan)


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array`` lies in a memory map (np.load(mmap_mode=...) or a view of one)."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def _may(array: np.ndarray, advice: int) -> bool:
    """Whether ``advice`` may be given over ``array``: a memory map on Linux, and for
    MADV_DONTNEED a read-only one (on a private writable map it would drop the writes)."""
    if _LIBC is None or not _mapped(array):
        return False
    return advice != mmap.MADV_DONTNEED or not array.flags.writeable


def advise(array: np.ndarray, advice: int, start: int = 0, length: int | None = None) -> bool:
    """madvise over bytes [start, start + length) of a memory-mapped array's data (the whole
    array by default), widened to whole pages. False when not advised (not mapped, not Linux,
    nothing to advise, or the kernel refused)."""
    if not _may(array, advice) or array.nbytes == 0:
        return False
    length = array.nbytes - start if length is None else length
    first = (array.ctypes.data + start) // PAGE * PAGE
    last = -(-(array.ctypes.data + start + length) // PAGE) * PAGE
    return _LIBC.madvise(first, last - first, advice) == 0


def _advise_ranges(array: np.ndarray, ranges: np.ndarray, advice: int) -> int:
    """Advise these ranges of a mapped array (``row_ranges``); returns how many were."""
    if not len(ranges) or not _may(array, advice):
        return 0
    iov = np.empty((len(ranges), 2), np.uint64)  # struct iovec: base, length
    iov[:, 0] = ranges[:, 0] + array.ctypes.data
    iov[:, 1] = ranges[:, 1] - ranges[:, 0]
    if _vectored(iov, advice):
        return len(ranges)
    starts, ends = ranges[:, 0].tolist(), ranges[:, 1].tolist()
    return sum(advise(array, advice, a, b - a) for a, b in zip(starts, ends, strict=True))


_pidfd: tuple[int, int] | None = None  # (pid, pidfd): a forked child opens its own


def _vectored(iov: np.ndarray, advice: int) -> bool:
    """process_madvise over every range at once; False where the kernel does not take it."""
    global _pidfd
    if _pidfd is None or _pidfd[0] != os.getpid():
        fd = _LIBC.syscall(_PIDFD_OPEN, ctypes.c_int(os.getpid()), ctypes.c_uint(0))
        _pidfd = (os.getpid(), int(fd))
    if _pidfd[1] < 0:
        return False
    for at in range(0, len(iov), _MAX_IOV):
        chunk = np.ascontiguousarray(iov[at : at + _MAX_IOV])
        done = _LIBC.syscall(
            _PROCESS_MADVISE,
            ctypes.c_int(_pidfd[1]),
            ctypes.c_void_p(chunk.ctypes.data),
            ctypes.c_size_t(len(chunk)),
            ctypes.c_int(advice),
            ctypes.c_uint(0),
        )
        if done < 0:
            return False
    return True


def row_ranges(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Byte ranges (k, 2) [start, end), relative to the array's data, of these rows (sorted,
    unique) of a C-contiguous array, page-aligned in memory (the first may begin before the
    data) and merged where they touch; none for an array that is not row-major contiguous or
    has no rows."""
    if array.ndim == 0 or not array.flags.c_contiguous or len(rows) == 0:
        return np.empty((0, 2), np.int64)
    stride = array.strides[0]
    data = array.ctypes.data
    starts = (data + rows.astype(np.int64) * stride) // PAGE * PAGE
    ends = -(-(data + (rows.astype(np.int64) + 1) * stride) // PAGE) * PAGE
    new = np.ones(len(starts), bool)
    new[1:] = starts[1:] > ends[:-1]  # rows sorted: ends rise with starts
    last = np.append(new[1:], True)
    return np.stack([starts[new] - data, ends[last] - data], axis=1)


def resident(array: np.ndarray) -> np.ndarray:
    """Per page of a memory-mapped array's data (from the page holding its first byte), whether
    it is in memory now (mincore); for benchmarks and tests. Raises OSError where it cannot
    tell (not Linux, not mapped)."""
    if _LIBC is None or not _mapped(array):
        raise OSError("page residency is known for memory-mapped arrays on Linux only")
    first = array.ctypes.data // PAGE * PAGE
    length = array.ctypes.data + array.nbytes - first
    pages = np.zeros(-(-length // PAGE), np.uint8)
    if _LIBC.mincore(first, length, pages.ctypes.data) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return (pages & 1).astype(bool)
