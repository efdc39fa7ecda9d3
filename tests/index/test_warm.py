"""Build.warm: the rerank rows read in once at load when they fit in a share of the available
memory (index.reader.WARM_SHARE), and left to be faulted in by searches when they do not."""

from __future__ import annotations

import pytest

from index import reader
from index.reader import load_current


def test_warm_reads_every_row_file_once_when_they_fit(index_dir) -> None:
    build = load_current(index_dir)
    files = sum(a.nbytes for part in build.parts for a in part.values())
    assert files > 0 and build.warm() == files
    assert build.warm(rows=False) == 0  # the tombstones' selector only


def test_warm_touches_nothing_when_the_rows_take_more_than_their_share(
    index_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = load_current(index_dir)
    monkeypatch.setattr(reader, "WARM_SHARE", 0)
    assert build.warm() == 0
    stored, grams = build.rerank_rows(build.units(3))  # faulted in on demand
    assert stored.global_.shape[0] == 1 and grams is not None
