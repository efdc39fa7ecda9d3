"""Published builds: the reader's API, deletes as a small tombstone write (hard links, no FAISS
read or written), writers publishing after a delete, compaction, and re-added videos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from index.reader import BuildError, load_current
from index.vectors import INDEX_FILES, LEVELS, unit_id
from index.writer import IndexWriter, compact, delete_videos
from tests.index.conftest import CHECKPOINT, add, as_written_before, times, videos


def _inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _found(build, video_id: int, seed: int = 0) -> set[int]:
    """Videos found at any level by queries made of ``video_id``'s own vectors."""
    from model import get_config

    own = videos(get_config("tiny"), [video_id], seed)
    queries = {
        "event": own.global_.numpy(),
        "action": own.action_segments[0].numpy(),
        "entity": own.entity_segments[0].numpy(),
    }
    found = set()
    for level, q in queries.items():
        for ids, _, _ in build.top_videos(level, q, 50):
            found.update(ids.tolist())
    return found


def test_the_reader_api_against_what_was_written(index_dir, cfg) -> None:
    build = load_current(index_dir, expect_checkpoint=CHECKPOINT)
    assert len(build) == 12 and build.video_ids() == list(range(1, 13))
    assert 5 in build and 13 not in build
    assert build.units(5) == [unit_id(5, 0)] and build.units(13) == []
    known = build.known(np.array([unit_id(3, 0), unit_id(13, 0), unit_id(12, 0), 3, 0]))
    assert known.tolist() == [True, False, True, False, False]  # unit ids, not video ids
    written = videos(cfg, [9, 2])
    stored = build.embeddings([unit_id(9, 0), unit_id(2, 0)])
    assert stored.global_.dtype == torch.float16
    assert torch.equal(stored.global_, written.global_.half())
    assert torch.equal(stored.noun_probs, written.noun_probs.half().float())
    rows, grams = build.rerank_rows([unit_id(9, 0), unit_id(2, 0)])
    assert torch.equal(rows.action_segments, stored.action_segments) and grams is not None
    assert np.array_equal(build.frame_times(unit_id(4, 0)), times(cfg, 1)[0])
    assert build.span(unit_id(4, 0)) == (0.0, 2.0)  # half a spacing past the last frame
    with pytest.raises(BuildError):
        build.frame_times(unit_id(13, 0))
    # exact (Flat) search against brute force over the event vectors
    everything = videos(cfg, list(range(1, 13))).global_.numpy()
    query = videos(cfg, [5]).global_.numpy()
    ids, scores, _ = build.top_videos("event", query, 4)[0]
    oracle = np.argsort(-(everything @ query[0]), kind="stable")[:4] + 1
    assert ids.tolist() == oracle.tolist() and ids[0] == 5
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert build.summary() == {
        "name": build.name,
        "build": build.name.split("/")[0],
        "version": 2,
        "checkpoint_sha256": CHECKPOINT,
        "factory": "Flat",
        "videos": 12,
        "units": 12,
        "vectors": {
            "event": 12,
            "action": 12 * cfg.num_action_segments,
            "entity": 12 * cfg.num_entity_segments,
        },
        "deleted_pending_compaction": 0,
    }
    assert build.name.endswith("/v2")


def test_a_delete_links_the_files_and_only_adds_tombstones(index_dir) -> None:
    before = load_current(index_dir)
    assert 4 in _found(before, 4)
    name = delete_videos(index_dir, [4, 99])  # 99 not indexed yet: tombstoned all the same
    assert (index_dir / "CURRENT").read_text().strip() == name == before.name[:-1] + "3"
    after = load_current(index_dir)
    new, old = after.root, before.root
    for f in INDEX_FILES:  # the same FAISS files, linked, not rewritten
        assert _inode(new / "vectors" / f) == _inode(old / "vectors" / f)
    for part in before.manifest["parts"]:
        for f in (old / "parts" / part).iterdir():
            assert _inode(new / "parts" / part / f.name) == _inode(f)
    assert json.loads((new / "vectors" / "vectors.json").read_text())["deleted"] == [4, 99]
    assert after.manifest["videos"] == 11 and after.manifest["counts"] == before.manifest["counts"]
    assert 4 not in after and len(after) == 11 and 4 not in _found(after, 4)
    assert after.summary()["deleted_pending_compaction"] == 1
    assert after.summary()["vectors"] == before.summary()["vectors"]  # still in the files
    # nothing new to tombstone: no new version
    assert delete_videos(index_dir, [4, 99]) == name and load_current(index_dir).name == name


def test_a_delete_never_reads_a_faiss_file(index_dir) -> None:
    """The current version's FAISS files replaced by garbage (new files, so the older
    versions keep theirs): a delete that loaded them would fail."""
    root = load_current(index_dir).root
    for f in INDEX_FILES:
        (root / "vectors" / f).unlink()
        (root / "vectors" / f).write_bytes(b"not a faiss index")
    name = delete_videos(index_dir, [2])
    new = index_dir / "builds" / name
    for f in INDEX_FILES:
        assert _inode(new / "vectors" / f) == _inode(root / "vectors" / f)
    assert json.loads((new / "vectors" / "vectors.json").read_text())["deleted"] == [2]


def test_a_delete_before_any_publish_is_a_build_error(tmp_path) -> None:
    with pytest.raises(BuildError):
        delete_videos(tmp_path / "index", [1])


def test_a_worker_publishing_after_deletes_keeps_the_tombstones(index_dir, cfg) -> None:
    writer = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    loaded = {level: writer.build.vectors.indexes[level] for level in LEVELS}
    delete_videos(index_dir, [3])
    delete_videos(index_dir, [8])  # two tombstone-only versions behind
    add(writer, [13, 14])
    # caught up without re-reading the FAISS files: the indexes in memory took the videos
    assert all(writer.build.vectors.indexes[lv] is loaded[lv] for lv in LEVELS)
    latest = load_current(index_dir)
    assert latest.name == writer.build.name
    assert latest.video_ids() == [1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14]
    assert not {3, 8} & (_found(latest, 3) | _found(latest, 8))
    assert {13, 14} <= _found(latest, 13) | _found(latest, 14)
    assert latest.manifest["videos"] == 12 and latest.summary()["deleted_pending_compaction"] == 2


def test_a_worker_behind_a_real_publish_reads_the_latest_afresh(index_dir, cfg) -> None:
    first = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    second = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    loaded = first.build.vectors.indexes["event"]
    add(second, [20])  # new FAISS files: the first worker's indexes are stale
    delete_videos(index_dir, [1])
    add(first, [21])
    assert first.build.vectors.indexes["event"] is not loaded
    latest = load_current(index_dir)
    assert {20, 21} <= set(latest.video_ids()) and 1 not in latest
    assert 1 not in _found(latest, 1) and 20 in _found(latest, 20)


def test_compaction_drops_tombstoned_vectors_and_rows(index_dir, cfg) -> None:
    before = load_current(index_dir)
    linked = {f: _inode(before.root / "vectors" / f) for f in INDEX_FILES}
    delete_videos(index_dir, [2])
    delete_videos(index_dir, [11, 5])
    compacted = compact(index_dir)
    assert compacted.manifest["counts"]["event"] == 9 and len(compacted.manifest["parts"]) == 1
    after = load_current(index_dir)
    assert after.video_ids() == [1, 3, 4, 6, 7, 8, 9, 10, 12]
    assert after.summary()["deleted_pending_compaction"] == 0
    meta = json.loads((after.root / "vectors" / "vectors.json").read_text())
    # the tombstones stay: a worker still holding 2, 5 or 11 must not publish it later
    assert meta["deleted"] == [2, 5, 11]
    assert meta["counts"]["action"] == 9 * cfg.num_action_segments
    for f in INDEX_FILES:  # rewritten, not linked
        assert _inode(after.root / "vectors" / f) != linked[f]
    assert torch.equal(
        after.embeddings(after.units(12)).global_, before.embeddings([unit_id(12, 0)]).global_
    )
    assert not {2, 5, 11} & (_found(after, 2) | _found(after, 5) | _found(after, 11))


def test_a_deleted_id_published_again_stays_deleted(index_dir, cfg) -> None:
    """Ids are never reused: a publish of a tombstoned id (a worker that held the video when it
    was deleted) adds nothing, and the video's other ids in the batch are added."""
    writer = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    delete_videos(index_dir, [6])
    add(writer, [6, 13], seed=1)
    latest = load_current(index_dir)
    assert 6 not in latest and 13 in latest and 6 not in _found(latest, 6, 1)
    assert 6 not in _found(latest, 6) and 13 in _found(latest, 13, 1)
    assert torch.equal(
        latest.embeddings(latest.units(13)).global_, videos(cfg, [13], 1).global_.half()
    )
    assert latest.summary()["vectors"]["event"] == 13  # 6's old vectors, until compaction
    name = latest.name
    add(writer, [6], seed=1)  # only a tombstoned video: no new version at all
    assert load_current(index_dir).name == name


def test_a_build_written_before_gram_matrices_takes_tombstones(index_dir) -> None:
    """A build from before the Gram files (and so before this delete) is deleted from and
    read as before."""
    as_written_before(load_current(index_dir).root, grams=False)
    name = delete_videos(index_dir, [7])
    after = load_current(index_dir)
    assert after.name == name and 7 not in after and 7 not in _found(after, 7)
    assert after.rerank_rows([unit_id(1, 0), unit_id(12, 0)])[1] is None and len(after) == 11


def test_a_long_videos_segments_are_units_replaced_and_deleted_with_it(index_dir, cfg) -> None:
    """Video 20 published as four segments (consecutive rows of one publish, with their
    spans): four units in order, each with its rows and span; published again with two
    segments, its other units are gone from the rows and the indexes; compaction keeps units
    and spans; a delete drops every unit."""
    writer = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    spans = np.array([[0, 10], [10, 20], [20, 30], [30, 41.5]], np.float32)
    seg = videos(cfg, [101, 102, 103, 104])
    writer.publish([20] * 4, seg, times(cfg, 4) + spans[:, :1], spans)
    build = load_current(index_dir)
    units = build.units(20)
    assert units == [unit_id(20, s) for s in range(4)] and len(build) == 13
    assert build.span(units[3]) == (30.0, 41.5)
    assert build.frame_times(units[1])[0] == pytest.approx(10.125)
    assert torch.equal(build.embeddings(units).global_, seg.global_.half())
    assert build.most_units() == 4 and build.summary()["units"] == 16
    writer.publish([20, 20], videos(cfg, [105, 106]), times(cfg, 2), spans[:2])
    again = load_current(index_dir)
    assert again.units(20) == units[:2] and again.vectors.count("event") == 14
    assert torch.equal(
        again.embeddings(again.units(20)).global_, videos(cfg, [105, 106]).global_.half()
    )
    compacted = compact(index_dir)
    latest = load_current(index_dir)
    assert latest.units(20) == units[:2] and latest.span(units[1]) == (10.0, 20.0)
    assert (
        compacted.manifest["parts"] == latest.manifest["parts"]
        and len(latest.manifest["parts"]) == 1
    )
    delete_videos(index_dir, [20])
    gone = load_current(index_dir)
    assert gone.units(20) == [] and 20 not in gone and len(gone) == 12
    assert not gone.known(np.array(units)).any()
    with pytest.raises(BuildError, match="consecutive"):
        writer.publish([21, 22, 21], videos(cfg, [1, 2, 3]), times(cfg, 3))


def test_an_empty_first_version_is_published_for_an_empty_library(tmp_path, cfg) -> None:
    """A rebuild of a library with no videos still publishes a build of its checkpoint."""
    writer = IndexWriter.open(tmp_path / "index", cfg, CHECKPOINT, "Flat")
    writer.publish_empty()
    build = load_current(tmp_path / "index", expect_checkpoint=CHECKPOINT)
    assert len(build) == 0 and build.rows == {} and build.manifest["version"] == 1
    add(writer, [3])  # and videos go on top of it
    assert load_current(tmp_path / "index").video_ids() == [3]
