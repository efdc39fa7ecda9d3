"""index.pages: madvise over memory-mapped rerank rows, checked against the kernel's page cache
(mincore) on real files: a cold fault reads its own pages only, a prefetch reads exactly the
rows asked for, and the byte ranges it advises cover them."""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import numpy as np
import pytest

from index import pages
from index.pages import PAGE, RowPaging, resident, row_ranges

pytestmark = pytest.mark.skipif(pages._LIBC is None, reason="madvise and mincore: Linux only")
ROW = 3 * PAGE + 100  # bytes per row: rows straddle pages


def rows_file(tmp_path: Path, count: int = 2000) -> np.ndarray:
    """A (count, ROW) uint8 array saved to disk, flushed, dropped from the page cache, and
    memory-mapped again: nothing of it is in memory."""
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(count * ROW, dtype=np.int64).astype(np.uint8).reshape(count, ROW))
    array = np.load(path, mmap_mode="r")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        for _ in range(100):  # pages still under writeback stay until it ends
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not resident(array).any():
                break
            time.sleep(0.02)
    finally:
        os.close(fd)
    if resident(array).any():
        pytest.skip("this file system keeps the file's pages in memory (DONTNEED ignored)")
    return array


def row_pages(array: np.ndarray, row: int) -> set[int]:
    """The page numbers (as ``resident`` counts them) holding one row."""
    first = array.ctypes.data // PAGE * PAGE
    start = array.ctypes.data + row * ROW
    return set(range((start - first) // PAGE, (start + ROW - 1 - first) // PAGE + 1))


def test_row_ranges_cover_each_row_page_aligned_and_merge_neighbours() -> None:
    array = np.zeros((100, ROW), np.uint8)
    rows = np.array([0, 1, 2, 50, 99])
    ranges = [tuple(r) for r in row_ranges(array, rows).tolist()]
    assert len(ranges) == 3  # 0-2 touch, 50 and 99 stand alone
    data = array.ctypes.data
    for start, end in ranges:
        assert (data + start) % PAGE == 0 and (data + end) % PAGE == 0 and start < end
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    for row in rows.tolist():
        lo, hi = row * ROW, (row + 1) * ROW
        assert any(s <= lo and hi <= e for s, e in ranges), row
    assert row_ranges(array, np.array([], np.int64)).shape == (0, 2)
    assert row_ranges(array[:, ::2], rows).shape == (0, 2)  # not contiguous: no advice


def test_a_cold_fault_reads_its_own_pages_only(tmp_path: Path) -> None:
    control = rows_file(tmp_path)
    int(control[1000].max())  # default advice: the kernel reads around the fault
    around = int(resident(control).sum())
    if around <= len(row_pages(control, 1000)):
        pytest.skip("this machine's disk has no readahead: nothing to tell apart")
    del control
    array = rows_file(tmp_path)
    RowPaging().go_cold([array])  # random access advised
    int(array[1000].max())
    got = set(np.flatnonzero(resident(array)).tolist())
    assert got == row_pages(array, 1000), (sorted(got), around)


@pytest.mark.parametrize("vectored", [True, False], ids=["process_madvise", "madvise"])
def test_a_prefetch_reads_the_rows_asked_for_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vectored: bool
) -> None:
    if not vectored:  # a kernel without process_madvise: one madvise per range
        monkeypatch.setattr(pages, "_vectored", lambda iov, advice: False)
    array = rows_file(tmp_path)
    paging = RowPaging()
    where = np.array([[0, 900], [0, 3], [0, 1500], [0, 3]])
    assert paging.prefetch([{"rows": array}], where) == 0  # warm: no advice
    paging.go_cold([array])
    assert paging.prefetch([{"rows": array}], where) == 3
    want = row_pages(array, 3) | row_pages(array, 900) | row_pages(array, 1500)
    deadline = time.monotonic() + 10
    while not all(resident(array)[sorted(want)]) and time.monotonic() < deadline:
        time.sleep(0.01)  # the reads were started, not waited for
    assert set(np.flatnonzero(resident(array)).tolist()) == want


def _mapped_kb(path: Path) -> int:
    """This process's resident kB of its mappings of ``path`` (/proc/self/smaps Rss)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_going_cold_unmaps_pages_and_leaves_them_in_the_page_cache(tmp_path: Path) -> None:
    array = rows_file(tmp_path, 200)
    int(array.max())  # every page read: mapped into this process
    assert _mapped_kb(tmp_path / "rows.npy") * 1024 >= array.nbytes - PAGE
    RowPaging().go_cold([array])
    assert _mapped_kb(tmp_path / "rows.npy") == 0  # the process holds none of them
    assert resident(array).all()  # still in the page cache: nothing read again
    assert int(array[7, 5]) == int(np.uint8((7 * ROW + 5) % 256))  # and the data unchanged


def test_a_release_unmaps_the_rows_a_search_read(tmp_path: Path) -> None:
    array = rows_file(tmp_path)
    paging = RowPaging()
    paging.go_cold([array])
    where = np.array([[0, 900], [0, 3]])
    assert paging.release([{"rows": array}], where) == 2  # cold: advised
    got = array[[900, 3]].copy()  # as a search copies its candidates' rows out
    assert _mapped_kb(tmp_path / "rows.npy") * 1024 >= 2 * ROW
    paging.release([{"rows": array}], where)
    assert _mapped_kb(tmp_path / "rows.npy") == 0
    assert all(resident(array)[sorted(row_pages(array, 3) | row_pages(array, 900))])
    assert np.array_equal(array[[900, 3]], got)
    assert RowPaging().release([{"rows": array}], where) == 0  # warm: the rows stay mapped


def test_reading_prefetches_then_unmaps_around_a_searchs_copy(tmp_path: Path) -> None:
    array = rows_file(tmp_path)
    paging = RowPaging()
    paging.go_cold([array])
    want = row_pages(array, 3) | row_pages(array, 900)
    with paging.reading([{"rows": array}], np.array([[0, 900], [0, 3]])):
        got = array[[900, 3]].copy()
        assert _mapped_kb(tmp_path / "rows.npy") * 1024 >= 2 * ROW
    assert _mapped_kb(tmp_path / "rows.npy") == 0  # unmapped once copied
    assert set(np.flatnonzero(resident(array)).tolist()) == want  # read those rows, kept cached
    assert np.array_equal(array[[900, 3]], got)


def test_writable_maps_are_never_unmapped(tmp_path: Path) -> None:
    path = tmp_path / "rows.npy"
    np.save(path, np.zeros((4, ROW), np.uint8))
    private = np.load(path, mmap_mode="c")  # copy-on-write: unmapping would lose the write
    private[1, 7] = 9
    paging = RowPaging()
    paging.go_cold([private])
    assert paging.release([{"rows": private}], np.array([[0, 1]])) == 0
    assert int(private[1, 7]) == 9


def test_advice_and_residency_need_a_memory_map() -> None:
    array = np.zeros((10, ROW), np.uint8)
    assert not pages.advise(array, mmap.MADV_RANDOM)
    assert RowPaging().prefetch([{"rows": array}], np.array([[0, 1]])) == 0
    with pytest.raises(OSError, match="memory-mapped"):
        resident(array)
