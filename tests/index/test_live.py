"""The live index (the API's view of the published build): a delete's version shares the
loaded FAISS indexes and memory-mapped rows; a real publish is loaded afresh."""

from __future__ import annotations

import time

import numpy as np
import torch

from index.live import LiveIndex
from index.vectors import LEVELS, UNIT_BITS
from index.writer import IndexWriter, compact, delete_videos
from tests.index.conftest import CHECKPOINT, add, videos


def test_a_tombstone_only_version_reuses_what_is_loaded(index_dir, cfg) -> None:
    live = LiveIndex(index_dir, expect_checkpoint=CHECKPOINT)
    first = live.current()
    assert first is not None and len(first) == 12
    delete_videos(index_dir, [5])
    second = live.current(wait=True)
    assert second is not None and second is not first and second.name.endswith("/v3")
    for level in LEVELS:  # the very FAISS index objects, not read again
        assert second.vectors.indexes[level] is first.vectors.indexes[level]
    assert second.shares_rows(first)
    assert 5 not in second and len(second) == 11 and 5 in first  # the old view is unchanged
    query = videos(cfg, [5]).global_.numpy()
    assert first.top_videos("event", query, 1)[0][0].tolist() == [5]
    assert 5 not in second.top_videos("event", query, 12)[0][0].tolist()
    assert np.array_equal(second.frame_times(6 << UNIT_BITS), first.frame_times(6 << UNIT_BITS))
    assert second.summary()["deleted_pending_compaction"] == 1
    delete_videos(index_dir, [6])  # a chain of deletes keeps sharing
    third = live.current(wait=True)
    assert third is not None and third.vectors.indexes["event"] is first.vectors.indexes["event"]
    assert third.video_ids() == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]


def test_a_real_publish_or_compaction_is_loaded_afresh(index_dir, cfg) -> None:
    live = LiveIndex(index_dir, expect_checkpoint=CHECKPOINT)
    first = live.current()
    assert first is not None
    add(IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat"), [13])
    second = live.current(wait=True)
    assert second is not None and 13 in second
    assert second.vectors.indexes["event"] is not first.vectors.indexes["event"]
    assert not second.shares_rows(first)
    delete_videos(index_dir, [1])
    compact(index_dir)
    third = live.current(wait=True)
    assert third is not None and 1 not in third and len(third) == 12
    assert third.vectors.indexes["event"] is not second.vectors.indexes["event"]
    assert third.vectors.count("event") == 12  # the compacted files, not the loaded ones


def test_rows_kept_out_of_memory_when_told_serve_cold(index_dir) -> None:
    """``HANET_ROWS_IN_MEMORY=0``: the rows are read cold whatever their size, and searches
    get the same rows as from a warm build."""
    cold = LiveIndex(index_dir, CHECKPOINT, rows_in_memory=0)
    warm = LiveIndex(index_dir, CHECKPOINT)
    builds = [cold.current(), warm.current()]
    deadline = time.monotonic() + 30
    while (cold.warming or warm.warming) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [b.paging.cold for b in builds] == [True, False]
    units = [u for v in (4, 9) for u in builds[0].units(v)]
    got, same = (b.rerank_rows(units)[0] for b in builds)
    assert all(torch.equal(getattr(got, f), getattr(same, f)) for f in vars(got))
