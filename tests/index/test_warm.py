"""Build.warm: the rerank rows read in once at load when they fit in a share of the available
memory (index.reader.WARM_SHARE), and read cold by searches when they do not (index.pages:
random access advised, each search's rows prefetched)."""

from __future__ import annotations

import pytest
import torch

from index import reader
from index.reader import load_current
from index.writer import delete_videos


def test_warm_reads_every_row_file_once_when_they_fit(index_dir) -> None:
    build = load_current(index_dir)
    files = sum(a.nbytes for part in build.parts for a in part.values())
    assert files > 0 and build.warm() == files
    assert build.warm(rows=False) == 0  # the tombstones' selector only


def test_warm_touches_nothing_when_the_rows_take_more_than_their_share(
    index_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm = load_current(index_dir)
    warm.warm()
    build = load_current(index_dir)
    monkeypatch.setattr(reader, "WARM_SHARE", 0)
    assert not build.paging.cold and build.warm() == 0
    assert build.paging.cold  # read cold: random access, each search's rows prefetched
    units = [u for v in (3, 1, 2) for u in build.units(v)]
    assert build.paging.prefetch(build.parts, build._where(units)) > 0
    stored, grams = build.rerank_rows(units)  # faulted in on demand
    same, same_grams = warm.rerank_rows(units)
    assert stored.global_.shape[0] == 3 and grams is not None
    for name, got in vars(stored).items():
        assert torch.equal(got, getattr(same, name)), name
    assert all(torch.equal(grams[k], same_grams[k]) for k in grams)
    assert warm.paging.prefetch(warm.parts, warm._where(units)) == 0  # warm: no advice


def test_a_deletes_version_reads_its_rows_as_the_build_it_shares_them_with(
    index_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = load_current(index_dir)
    monkeypatch.setattr(reader, "WARM_SHARE", 0)
    build.warm()
    delete_videos(index_dir, [2])
    after = load_current(index_dir, reuse=build)
    assert after.shares_rows(build) and after.paging is build.paging and after.paging.cold
