"""Build.warm: the rerank rows read in once at load when they fit in a share of the available
memory (index.reader.WARM_SHARE), and read cold by searches when they do not (index.pages:
random access advised, each search's rows read with system calls, none mapped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from index import pages, reader
from index import rows as formats
from index.reader import load_current
from index.writer import IndexWriter, delete_videos
from tests.index.conftest import (
    CHECKPOINT,
    add,
    as_written_before,
    as_written_before_summaries,
    mapped_kb,
)


def test_warm_reads_every_row_file_once_when_they_fit(index_dir) -> None:
    build = load_current(index_dir)
    loaded = [f for f in build.root.glob("parts/*/*.npy") if f.name != "unit_ids.npy"]
    files = sum(np.load(f, mmap_mode="r").nbytes for f in loaded)
    assert files > 0 and build.warm() == files
    assert build.warm(rows=False) == 0  # the tombstones' selector only


@pytest.mark.parametrize("records", [True, False], ids=["records", "a-file-per-field"])
def test_warm_touches_nothing_when_the_rows_take_more_than_their_share(
    index_dir, cfg, monkeypatch: pytest.MonkeyPatch, records: bool
) -> None:
    # and a part of one row (whose field views numpy calls contiguous)
    add(IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat"), [13])
    if not records:
        as_written_before(load_current(index_dir).root)
    build = load_current(index_dir)
    with monkeypatch.context() as patch:
        patch.setattr(reader, "WARM_SHARE", 0)
        assert not build.paging.cold and build.warm() == 0
    assert build.paging.cold  # read cold: each search's rows read with system calls
    units = [u for v in (3, 1, 13, 2) for u in build.units(v)]
    stored, grams = build.rerank_rows(units)  # read with system calls
    if pages._LIBC is not None:
        assert mapped_kb(build.root / "parts") == 0  # nothing of the rows mapped in
    warm = load_current(index_dir)
    assert warm.warm() > 0
    same, same_grams = warm.rerank_rows(units)
    assert stored.global_.shape[0] == 4 and grams is not None
    for name, got in vars(stored).items():
        assert torch.equal(got, getattr(same, name)), name
    assert all(torch.equal(grams[k], same_grams[k]) for k in grams)


def test_a_deletes_version_reads_its_rows_as_the_build_it_shares_them_with(
    index_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = load_current(index_dir)
    monkeypatch.setattr(reader, "WARM_SHARE", 0)
    build.warm()
    delete_videos(index_dir, [2])
    after = load_current(index_dir, reuse=build)
    assert after.shares_rows(build) and after.paging is build.paging and after.paging.cold


@pytest.mark.parametrize("layout", ["summaries", "before-summaries", "a-file-per-field"])
def test_read_cold_the_summaries_can_stay_in_memory(index_dir, layout: str) -> None:
    """``summaries``: the rows are read cold but for the summaries' files (``SUMMARY`` or an
    older part's files of its fields), read in and left mapped; searches read the same rows."""
    if layout == "before-summaries":
        as_written_before_summaries(load_current(index_dir).root)
    elif layout == "a-file-per-field":
        as_written_before(load_current(index_dir).root)
    build = load_current(index_dir)
    kept = [
        a
        for part in build.parts
        for name, a in pages.file_arrays(part).items()
        if name in formats.SUMMARY_FILES
    ]
    assert kept and build.warm(share=0.0, summaries=1.0) == sum(a.nbytes for a in kept)
    assert build.paging.cold and build.paging.summaries
    opened = {id(a) for a, _ in build.paging._files.values()}
    assert opened and not opened & {id(a) for a in kept}  # read through the map, not the file
    if pages._LIBC is not None:
        assert all(pages.resident(a).all() for a in kept)
    units = [u for v in (3, 1, 2) for u in build.units(v)]
    stored, _ = build.rerank_rows(units)
    warm = load_current(index_dir)
    warm.warm()
    same, _ = warm.rerank_rows(units)
    for name, got in vars(stored).items():
        assert torch.equal(got, getattr(same, name)), name
    small = load_current(index_dir)  # too many bytes for the share asked: all cold
    assert small.warm(share=0.0, summaries=1e-15) == 0 and not small.paging.summaries
