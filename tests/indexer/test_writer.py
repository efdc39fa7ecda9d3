"""The writer on its own: held batches -> the index, and only then the rows; failures; deletes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video
from index.reader import BuildError, load_current
from index.writer import IndexWriter, promote
from indexer.decode import decode_video
from indexer.embedder import EmbeddedBatch, Embedder
from indexer.reader import Decoded, Undecodable
from indexer.writer import BatchWriter, remove_videos
from model import HANet, create_model

WORKER = "host:1:writer"


def _embedded(model: HANet, corpus: Path, video_ids: list[int]) -> EmbeddedBatch:
    """These queued videos (ids in corpus name order, 1 = broken.mp4) decoded and embedded."""
    paths = sorted(corpus.iterdir())
    t, size = model.cfg.max_frames, model.preprocess.image_size
    decoded = [Decoded(i, decode_video(paths[i - 1], t, size)) for i in video_ids]
    return Embedder(model)(decoded)


def _writer(engine: Engine, model: HANet, index_dir: Path, interval_s: float = 0.0) -> BatchWriter:
    """A writer on a new index, its worker holding every queued job."""
    queue.claim(engine, worker=WORKER, limit=100)
    index = IndexWriter.open(index_dir, model.cfg, model.checkpoint_sha256, "Flat")
    return BatchWriter(engine, index, worker=WORKER, publish_interval_s=interval_s)


def _rows(engine: Engine, video_ids: list[int]) -> dict[int, Video]:
    with Session(engine, expire_on_commit=False) as session:
        return {v.id: v for v in session.query(Video).filter(Video.id.in_(video_ids))}


def test_rows_are_marked_indexed_only_after_the_publish(
    tmp_path, corpus, fill, vocab_model
) -> None:
    engine, index_dir = fill(), tmp_path / "index"
    writer = _writer(engine, vocab_model, index_dir, interval_s=3600)
    first, second = _embedded(vocab_model, corpus, [2, 3]), _embedded(vocab_model, corpus, [4])
    writer.hold(first)
    assert writer.publish_if_due(more_queued=True) == []  # held: published recently
    writer.hold(second)
    assert writer.held_ids == [2, 3, 4]
    assert {v.status for v in _rows(engine, [2, 3, 4]).values()} == {"processing"}
    with pytest.raises(BuildError):  # nothing published yet
        load_current(index_dir)
    assert writer.publish_if_due(more_queued=False) == [2, 3, 4]  # the queue ran dry: at once
    assert writer.held_ids == []
    build = load_current(index_dir, expect_checkpoint=vocab_model.checkpoint_sha256)
    assert build.video_ids() == [2, 3, 4] and build.manifest["version"] == 1
    rows = _rows(engine, [2, 3, 4])
    for batch in (first, second):
        for i, video_id in enumerate(batch.video_ids):
            row = rows[video_id]
            assert row.status == "indexed" and row.claimed_by is None
            assert row.duration_s == batch.durations_s[i] == 2.0
            assert row.checkpoint_sha256 == vocab_model.checkpoint_sha256
            assert row.concepts == batch.concepts[i] and row.concepts is not None


def test_a_row_the_index_refuses_is_failed_not_indexed(tmp_path, corpus, fill, model) -> None:
    """A tombstoned id whose row exists (an id a database from before migration 0004 gave to a
    new video) is not published, and its row says so instead of "indexed"."""
    from index.writer import delete_videos

    engine, index_dir = fill(), tmp_path / "index"
    writer = _writer(engine, model, index_dir)
    writer.hold(_embedded(model, corpus, [2]))
    assert writer.publish() == [2]
    delete_videos(index_dir, [3])  # the deletion of an earlier video that had id 3
    writer.hold(_embedded(model, corpus, [3, 4]))
    assert writer.publish() == [4]
    rows = _rows(engine, [3, 4])
    assert rows[4].status == "indexed"
    assert rows[3].status == "failed" and "delete the video and add it again" in (
        rows[3].failure_reason or ""
    )
    assert load_current(index_dir).video_ids() == [2, 4]


@pytest.mark.slow
def test_without_an_interval_every_batch_is_published(tmp_path, corpus, fill, model) -> None:
    engine, index_dir = fill(), tmp_path / "index"
    writer = _writer(engine, model, index_dir)
    writer.hold(_embedded(model, corpus, [2]))
    assert writer.publish_if_due(more_queued=True) == [2]
    writer.hold(_embedded(model, corpus, [3, 4]))
    assert writer.publish_if_due(more_queued=True) == [3, 4]
    build = load_current(index_dir)
    assert build.manifest["version"] == 2 and len(build) == 3
    assert _rows(engine, [2])[2].concepts is None  # no vocabulary, no concepts
    assert writer.publish() == []  # nothing held: nothing to do


@pytest.mark.slow
def test_a_publish_that_raises_leaves_the_rows_processing(tmp_path, corpus, fill, model) -> None:
    """Here the index was rebuilt with another checkpoint meanwhile: the publish refuses, and
    the rows stay the worker's (to be indexed again), not indexed without their vectors."""
    engine, index_dir = fill(), tmp_path / "index"
    writer = _writer(engine, model, index_dir)
    writer.hold(_embedded(model, corpus, [2]))
    assert writer.publish() == [2]
    other = create_model("tiny")
    other.save(str(tmp_path / "other.pt"))
    rebuilt = IndexWriter.open(tmp_path / "staging", other.cfg, other.checkpoint_sha256, "Flat")
    rebuilt.publish([2], _embedded(other, corpus, [2]).embeddings, np.zeros((1, 8), np.float32))
    promote(tmp_path / "staging", index_dir)
    writer.hold(_embedded(model, corpus, [3, 4]))
    with pytest.raises(BuildError, match="hanet index rebuild"):
        writer.publish()
    rows = _rows(engine, [3, 4])
    assert {v.status for v in rows.values()} == {"processing"}
    assert all(v.claimed_by == WORKER and v.checkpoint_sha256 is None for v in rows.values())
    assert writer.held_ids == [3, 4]
    assert 3 not in load_current(index_dir)


def test_failures_are_recorded_with_their_reasons(tmp_path, fill, model) -> None:
    engine = fill()
    writer = _writer(engine, model, tmp_path / "index")
    queue.release(engine, worker=WORKER, ids=[5])  # no longer this worker's job
    failures = [Undecodable(1, "not a readable media file (x)"), Undecodable(5, "too late")]
    assert writer.record_failures(failures) == {1: "not a readable media file (x)"}
    rows = _rows(engine, [1, 5])
    assert rows[1].status == "failed" and rows[1].failure_reason.startswith("not a readable")
    assert rows[5].status == "pending" and rows[5].failure_reason is None


def test_a_writer_with_a_stale_build_keeps_the_tombstones(tmp_path, corpus, fill, model) -> None:
    engine, index = fill(), tmp_path / "index"
    writer = _writer(engine, model, index)
    writer.hold(_embedded(model, corpus, [2, 3, 4, 5, 6, 7]))
    writer.publish()
    stale = load_current(index)  # a worker's copy, read before the delete below
    gone = stale.video_ids()[0]
    assert remove_videos(engine, index, [gone]) == [gone]
    again = stale.video_ids()[1]  # re-indexing a video publishes from the stale copy
    held = EmbeddedBatch(
        [again],
        stale.embeddings([again]),
        np.zeros((1, model.cfg.max_frames), np.float32),
        [2.0],
        [None],
    )
    stale_writer = BatchWriter(engine, IndexWriter(index, stale), worker="w")
    stale_writer.hold(held)
    stale_writer.publish()
    latest = load_current(index)
    assert gone not in latest and again in latest
    assert gone in latest.vectors.deleted


def test_remove_videos_deletes_the_rows_it_finds(tmp_path, fill) -> None:
    engine = fill()
    assert remove_videos(engine, tmp_path / "index", [2, 3, 999]) == [2, 3]  # nothing indexed
    assert set(_rows(engine, [1, 2, 3, 4])) == {1, 4}
    assert sum(queue.counts(engine).values()) == 11
