"""index.pages: reading memory-mapped rerank rows cold, checked against the kernel's page cache
(mincore) and this process's mappings (smaps) on real files: a cold fault reads its own pages
only, and a cold read copies exactly the rows asked for out of the files (nothing around them)
without mapping them."""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import numpy as np
import pytest

from index import pages
from index.pages import PAGE, RowPaging, resident
from tests.index.conftest import mapped_kb

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


def test_going_cold_unmaps_pages_and_leaves_them_in_the_page_cache(tmp_path: Path) -> None:
    array = rows_file(tmp_path, 200)
    int(array.max())  # every page read: mapped into this process
    assert mapped_kb(tmp_path / "rows.npy") * 1024 >= array.nbytes - PAGE
    RowPaging().go_cold([array])
    assert mapped_kb(tmp_path / "rows.npy") == 0  # the process holds none of them
    assert resident(array).all()  # still in the page cache: nothing read again
    assert int(array[7, 5]) == int(np.uint8((7 * ROW + 5) % 256))  # and the data unchanged


@pytest.mark.parametrize("nowait", [True, False], ids=["cache-first", "no-RWF_NOWAIT"])
def test_a_cold_read_copies_exactly_the_rows_asked_for_and_maps_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: bool
) -> None:
    if not nowait:  # a kernel or file system without it: every row read waiting
        monkeypatch.setattr(pages, "_NOWAIT", 0)
    array = rows_file(tmp_path)
    paging = RowPaging()
    paging.go_cold([array])
    where = np.array([[0, 900], [0, 3], [0, 1500], [0, 3], [0, 4]])  # 3 and 4: one read
    got, at = paging.read([{"rows": array}], where)
    assert len(got) == 1 and at[:, 0].tolist() == [0] * 5
    assert at[:, 1].tolist() == [2, 0, 3, 0, 1]  # among the distinct rows, ascending
    assert mapped_kb(tmp_path / "rows.npy") == 0  # copied with system calls, not mapped
    want = set().union(*(row_pages(array, r) for r in (3, 4, 900, 1500)))
    assert set(np.flatnonzero(resident(array)).tolist()) == want  # no read-around either
    for (_, row), (part, i) in zip(where.tolist(), at.tolist(), strict=True):
        assert np.array_equal(got[part]["rows"][i], array[row]), row


def test_a_cold_read_takes_a_records_fields_with_it_and_leaves_what_it_is_told(
    tmp_path: Path,
) -> None:
    kind = np.dtype([("x", np.float32, (3,)), ("n", np.int8, (5,))], align=True)
    records = np.lib.format.open_memmap(tmp_path / "records.npy", "w+", kind, (50,))
    records["x"] = np.arange(150, dtype=np.float32).reshape(50, 3)
    records["n"] = np.arange(250).reshape(50, 5) % 100
    records.flush()
    records = np.load(tmp_path / "records.npy", mmap_mode="r")
    times = np.load(_saved(tmp_path / "times.npy", np.arange(50.0)), mmap_mode="r")
    part = {"records": records, "x": records["x"], "n": records["n"], "times": times}
    paging = RowPaging()
    paging.go_cold(list(part.values()))
    got, at = paging.read([part], np.array([[0, 7], [0, 40]]), leave=("times",))
    assert sorted(got[0]) == ["n", "records", "x"]
    assert np.array_equal(got[0]["x"][at[:, 1]], records["x"][[7, 40]])
    assert np.array_equal(got[0]["n"][at[:, 1]], records["n"][[7, 40]])


def test_a_file_cut_short_under_a_cold_read_fails_with_the_reason(tmp_path: Path) -> None:
    path = _saved(tmp_path / "rows.npy", np.ones((64, 1024), np.uint8))
    array = np.load(path, mmap_mode="r")
    paging = RowPaging()
    paging.go_cold([array])
    os.truncate(path, os.path.getsize(path) // 2)
    assert paging.read([{"rows": array}], np.array([[0, 1]]))[0][0]["rows"].sum() == 1024
    with pytest.raises(OSError, match=r"read 0 of 1024 bytes"):
        paging.read([{"rows": array}], np.array([[0, 60]]))


def _saved(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_writable_maps_are_never_unmapped(tmp_path: Path) -> None:
    path = tmp_path / "rows.npy"
    np.save(path, np.zeros((4, ROW), np.uint8))
    private = np.load(path, mmap_mode="c")  # copy-on-write: unmapping would lose the write
    private[1, 7] = 9
    RowPaging().go_cold([private])
    assert int(private[1, 7]) == 9


def test_advice_and_residency_need_a_memory_map() -> None:
    array = np.zeros((10, ROW), np.uint8)
    assert not pages.advise(array, mmap.MADV_RANDOM)
    with pytest.raises(OSError, match="memory-mapped"):
        resident(array)
