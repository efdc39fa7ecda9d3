"""Reading memory-mapped rerank rows that do not fit in memory.

A build's rows are memory-mapped (index.reader). When they fit, ``Build.warm`` reads them in
once and searches find them in memory. When they do not (a library larger than the page cache
can hold), or a server is told to keep them out of its memory (``HANET_ROWS_IN_MEMORY``), its
build goes cold (``RowPaging.go_cold``) and each search reads its candidates' rows with system
calls (``RowPaging.read``), from the page cache or the disk:

- nothing mapped: the rows are copied out with ``preadv``, not faulted in through the map, so
  the process's resident memory stays its own, not the page cache's, and no fault, page-table
  or unmapping work is done per row; a records part holds a unit's fields in two records
  (``index.rows.RECORDS``, ``SUMMARY``): two reads a unit;
- no read-around: the files' reads are advised random (POSIX_FADV_RANDOM), and so are the maps
  (MADV_RANDOM), or a read would bring in the block device's readahead window around each row
  (``/sys/block/<dev>/queue/read_ahead_kb``: 128 KB on many machines, megabytes on some virtual
  disks) and evict rows other searches need;
- all disk reads at once: each row is first read from the page cache alone (RWF_NOWAIT); for
  the rows that are not there, read-ahead is advised for all (POSIX_FADV_WILLNEED) before any
  is waited for, so the kernel starts those reads together and the search waits for the
  slowest, not for their sum.

A cold build may keep its units' summaries in memory (``Build.warm``'s ``summaries``,
``HANET_SUMMARIES_IN_MEMORY``): they are not advised, unmapped or opened, and are read through
the map. ``go_cold`` also unmaps what the load mapped (its pass over the probabilities).
Advice is Linux only; elsewhere rows are read one after another. None of this changes what is
read: a search's results are the same either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import weakref
from collections.abc import Collection
from pathlib import Path

import numpy as np

from index.rows import STRUCTURED, Parts

PAGE = mmap.PAGESIZE
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _LIBC is not None:
    _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _LIBC.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


class RowPaging:
    """How a build's memory-mapped rows are read: warm (read in at load, the default) or cold
    (kept out of memory: each search's rows read with system calls). Builds that share one set
    of mapped rows (a delete's version) share one of these."""

    def __init__(self) -> None:
        self.cold = False
        # cold, but the summaries (``index.rows.SUMMARY_FILES``) were read in and stay mapped
        self.summaries = False
        self._files: dict[int, tuple[np.ndarray, int]] = {}  # id(array): (array, open file)

    def go_cold(self, arrays: list[np.ndarray]) -> None:
        """The rows will not be read in: advise random access over every mapped array, unmap
        what is mapped now (the concept lists' pass over the probabilities, made at load: the
        pages stay in the page cache) and open each array's file, for ``read``."""
        for array in arrays:
            advise(array, mmap.MADV_RANDOM)
            advise(array, mmap.MADV_DONTNEED)  # read-only shared maps: nothing is lost
            path = getattr(array, "filename", None)
            if path and array.flags.c_contiguous and id(array) not in self._files:
                with contextlib.suppress(OSError):  # a file gone since: read through the map
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                    weakref.finalize(self, os.close, fd)
                    if hasattr(os, "posix_fadvise"):  # its reads: no read-around either
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                    self._files[id(array)] = (array, fd)
        self.cold = True

    def read(
        self,
        parts: Parts,
        where: np.ndarray,
        leave: Collection[str] = (),
        only: Collection[str] | None = None,
    ) -> tuple[Parts, np.ndarray]:
        """The rows at (part, row) pairs (``where``) of every array of their parts but those
        named in ``leave`` (of those named in ``only``, when given: whole files, not a
        records part's fields), copied out of their files (``read_rows``): nothing is mapped
        into this process. Returns those rows as parts of their own, and where each pair's
        row is in them."""
        got, at = [], np.empty_like(where)
        for part in np.unique(where[:, 0]).tolist():
            chosen = where[:, 0] == part
            rows, at[chosen, 1] = np.unique(where[chosen, 1], return_inverse=True)
            at[chosen, 0] = len(got)
            got.append(self._read_part(parts[part], rows, leave, only))
        return got, at

    def _read_part(
        self,
        part: dict[str, np.ndarray],
        rows: np.ndarray,
        leave: Collection[str],
        only: Collection[str] | None,
    ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, array in file_arrays(part).items():
            if name in leave or (only is not None and name not in only):
                continue
            opened = self._files.get(id(array))  # None: its file was gone: through the map
            got = np.asarray(array[rows]) if opened is None else read_rows(opened[1], array, rows)
            out[name] = got
            out.update({field: got[field] for field in got.dtype.names or ()})  # the records'
        return out


def touch(arrays: list[np.ndarray]) -> int:
    """Read one byte of every page of these (memory-mapped) arrays, so that their pages are in
    memory; returns their bytes."""
    page = mmap.PAGESIZE
    for array in arrays:
        flat = array.reshape(-1).view(np.uint8)
        if flat.size:
            int(flat[::page].max())
    return sum(a.nbytes for a in arrays)


def fits(nbytes: int, share: float) -> bool:
    """Whether ``nbytes`` take at most ``share`` of the memory available now."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        available = next(int(x.split()[1]) * 1024 for x in lines if x.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return nbytes <= available * share


def file_arrays(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A loaded part's arrays that are whole files, by name: all but a records part's views of
    its records' fields (``index.rows.STRUCTURED``)."""
    fields = {f for name in STRUCTURED if name in part for f in part[name].dtype.names or ()}
    return {name: array for name, array in part.items() if name not in fields}


def read_rows(fd: int, array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows (sorted, unique) of a C-contiguous memory-mapped array (np.load's: ``offset`` is
    where its data begins in the file) read from its open file ``fd`` into the returned array,
    one ``preadv`` per run of consecutive rows: first each from the page cache alone
    (RWF_NOWAIT: what is not in memory is left), then what is left after one read-ahead
    advice per run (the kernel starts those disk reads together: the copies then wait for the
    slowest, not for their sum)."""
    out = np.empty((len(rows), *array.shape[1:]), array.dtype)
    stride = array.strides[0] if array.ndim else 0
    if not len(rows) or not stride:
        return out
    data = memoryview(out.reshape(-1).view(np.uint8))
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # each run's first position
    ends = np.append(starts[1:], len(rows))
    left = []  # (bytes of ``out`` from, to, file offset) not read from the page cache
    for a, b, row in zip(starts.tolist(), ends.tolist(), rows[starts].tolist(), strict=True):
        lo, hi, offset = a * stride, b * stride, array.offset + row * stride
        done = _cached(fd, data[lo:hi], offset)
        if done < hi - lo:
            left.append((lo + done, hi, offset + done))
    for lo, hi, offset in left if hasattr(os, "posix_fadvise") else ():
        os.posix_fadvise(fd, offset, hi - lo, os.POSIX_FADV_WILLNEED)
    for lo, hi, offset in left:
        done = os.preadv(fd, [data[lo:hi]], offset)
        if done != hi - lo:  # a regular file reads whole unless it was cut short
            raise OSError(f"{array.filename}: read {done} of {hi - lo} bytes at {offset}")
    return out


_NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux 4.14 and later


def _cached(fd: int, into: memoryview, offset: int) -> int:
    """Bytes read into ``into`` from the file at ``offset`` without waiting for the disk (0
    where that cannot be asked: the caller then reads them, waiting)."""
    global _NOWAIT
    if not _NOWAIT:
        return 0
    try:
        return os.preadv(fd, [into], offset, _NOWAIT)
    except BlockingIOError:  # its first page is not in memory
        return 0
    except OSError:  # this file system or kernel does not take the flag: never again
        _NOWAIT = 0
        return 0


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
