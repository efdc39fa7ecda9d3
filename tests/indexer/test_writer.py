"""The writer on its own: held units -> the index by whole finished videos, and only then the
rows; failures; deletes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video
from index.reader import BuildError, load_current
from index.vectors import unit_id
from index.writer import IndexWriter, promote
from indexer.embedder import EmbeddedBatch, Embedder, Unit
from indexer.reader import Undecodable
from indexer.segments import SegmentCfg, decode_segments
from indexer.writer import BatchWriter, remove_videos
from model import HANet, create_model

WORKER = "host:1:writer"


def _embedded(model: HANet, corpus: Path, video_ids: list[int]) -> EmbeddedBatch:
    """These queued videos (ids in corpus name order, 1 = broken.mp4) decoded and embedded,
    one unit each (2 s videos)."""
    paths = sorted(corpus.iterdir())
    t, size = model.cfg.max_frames, model.preprocess.image_size
    units = [Unit(i, 0, decode_segments(paths[i - 1], t, size).segments[0]) for i in video_ids]
    return Embedder(model)(units)


def _finish(writer: BatchWriter, model: HANet, video_ids: list[int]) -> None:
    """These held videos read to their end (where their last unit ends), with their concepts
    (as the job finishes them)."""
    for video_id in video_ids:
        units = writer.units(video_id)
        duration_s = float(units.spans[-1, 1])
        writer.finish(video_id, duration_s, Embedder(model).concepts(units.embeddings))


def _writer(
    engine: Engine, model: HANet, index_dir: Path, interval_s: float = 0.0, spill_units: int = 64
) -> BatchWriter:
    """A writer on a new index, its worker holding every queued job."""
    queue.claim(engine, worker=WORKER, limit=100)
    index = IndexWriter.open(index_dir, model.cfg, model.checkpoint_sha256, "Flat")
    return BatchWriter(
        engine, index, worker=WORKER, publish_interval_s=interval_s, spill_units=spill_units
    )


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
    _finish(writer, vocab_model, [2, 3])
    assert writer.publish_if_due(more_queued=True) == []  # held: published recently
    writer.hold(second)
    _finish(writer, vocab_model, [4])
    assert writer.held_ids == [2, 3, 4]
    assert {v.status for v in _rows(engine, [2, 3, 4]).values()} == {"processing"}
    with pytest.raises(BuildError):  # nothing published yet
        load_current(index_dir)
    assert writer.publish_if_due(more_queued=False) == [2, 3, 4]  # the queue ran dry: at once
    assert writer.held_ids == []
    build = load_current(index_dir, expect_checkpoint=vocab_model.checkpoint_sha256)
    assert build.video_ids() == [2, 3, 4] and build.manifest["version"] == 1
    assert [build.units(v) for v in (2, 3, 4)] == [[unit_id(v, 0)] for v in (2, 3, 4)]
    rows = _rows(engine, [2, 3, 4])
    embed = Embedder(vocab_model)
    for batch in (first, second):
        for i, video_id in enumerate(batch.video_ids):
            row = rows[video_id]
            assert row.status == "indexed" and row.claimed_by is None
            assert row.duration_s == row.indexed_s == batch.spans[i, 1] == 2.0
            assert row.segments == 1
            assert row.checkpoint_sha256 == vocab_model.checkpoint_sha256
            concepts = embed.concepts(batch.embeddings.select([i]))
            assert row.concepts == concepts and row.concepts is not None


@pytest.mark.parametrize("spill_units", [64, 1], ids=["in-memory", "spooled"])
def test_a_video_is_published_once_finished_with_all_its_units(
    tmp_path, corpus, fill, model, spill_units
) -> None:
    """A video held in pieces (its units embedded in two batches, beside another video) is
    published only when finished, all its units at once, in segment order; the same whether
    its units waited in memory or, past ``spill_units``, in a spool on disk."""
    engine, index_dir = fill(), tmp_path / "index"
    writer = _writer(engine, model, index_dir, spill_units=spill_units)
    spools = index_dir / ".spool"
    t, size = model.cfg.max_frames, model.preprocess.image_size
    cfg = SegmentCfg(min_s=0.5, max_s=1.0, window_s=0.5, overlap_s=0.0)  # a 2 s video in windows
    segments = decode_segments(sorted(corpus.iterdir())[4], t, size, cfg).segments
    assert len(segments) == 3
    units, embed = [Unit(5, i, s) for i, s in enumerate(segments)], Embedder(model)
    writer.hold(EmbeddedBatch.cat([embed(units[:2]), _embedded(model, corpus, [2])]))
    _finish(writer, model, [2])
    assert writer.publish() == [2]  # video 5 is not read to its end: held
    assert writer.held_ids == [5] and 5 not in load_current(index_dir)
    assert _rows(engine, [5])[5].status == "processing"
    on_disk = [p.name.split("-")[0] for p in spools.iterdir()] if spools.exists() else []
    assert on_disk == (["5"] if spill_units == 1 else [])  # video 2 (one unit) never spooled
    writer.hold(embed(units[2:]))
    held = writer.units(5)
    assert held.video_ids == [5, 5, 5] and held.segments == [0, 1, 2]
    spans = [[s.start_s, s.end_s] for s in segments]
    assert np.allclose(held.spans, spans)
    writer.finish(5, 2.0, None)
    assert writer.publish() == [5]
    assert writer.held_ids == [] and writer.units(5) is None
    assert not spools.exists() or not list(spools.iterdir())
    build = load_current(index_dir)
    assert build.video_ids() == [2, 5] and build.manifest["counts"]["event"] == 4
    assert build.units(5) == [unit_id(5, i) for i in range(3)]
    assert np.allclose([build.span(u) for u in build.units(5)], spans)
    stored = build.embeddings(build.units(5)).global_.float()
    assert torch.allclose(stored, embed(units).embeddings.global_, atol=1e-3)
    row = _rows(engine, [5])[5]
    assert row.status == "indexed" and row.segments == 3 and row.duration_s == 2.0


def test_a_row_the_index_refuses_is_failed_not_indexed(tmp_path, corpus, fill, model) -> None:
    """A tombstoned id whose row exists (an id a database from before migration 0004 gave to a
    new video) is not published, and its row says so instead of "indexed"."""
    from index.writer import delete_videos

    engine, index_dir = fill(), tmp_path / "index"
    writer = _writer(engine, model, index_dir)
    writer.hold(_embedded(model, corpus, [2]))
    _finish(writer, model, [2])
    assert writer.publish() == [2]
    delete_videos(index_dir, [3])  # the deletion of an earlier video that had id 3
    writer.hold(_embedded(model, corpus, [3, 4]))
    _finish(writer, model, [3, 4])
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
    _finish(writer, model, [2])
    assert writer.publish_if_due(more_queued=True) == [2]
    writer.hold(_embedded(model, corpus, [3, 4]))
    _finish(writer, model, [3, 4])
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
    _finish(writer, model, [2])
    assert writer.publish() == [2]
    other = create_model("tiny")
    other.save(str(tmp_path / "other.pt"))
    rebuilt = IndexWriter.open(tmp_path / "staging", other.cfg, other.checkpoint_sha256, "Flat")
    rebuilt.publish([2], _embedded(other, corpus, [2]).embeddings, np.zeros((1, 8), np.float32))
    promote(tmp_path / "staging", index_dir)
    writer.hold(_embedded(model, corpus, [3, 4]))
    _finish(writer, model, [3, 4])
    with pytest.raises(BuildError, match="hanet index rebuild"):
        writer.publish()
    rows = _rows(engine, [3, 4])
    assert {v.status for v in rows.values()} == {"processing"}
    assert all(v.claimed_by == WORKER and v.checkpoint_sha256 is None for v in rows.values())
    assert writer.held_ids == [3, 4]  # still held, still to be released by the job
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
    _finish(writer, model, [2, 3, 4, 5, 6, 7])
    writer.publish()
    stale = load_current(index)  # a worker's copy, read before the delete below
    gone = stale.video_ids()[0]
    assert remove_videos(engine, index, [gone]) == [gone]
    again = stale.video_ids()[1]  # re-indexing a video publishes from the stale copy
    held = EmbeddedBatch(
        [again],
        [0],
        stale.embeddings(stale.units(again)),
        np.zeros((1, model.cfg.max_frames), np.float32),
        np.array([[0.0, 2.0]], np.float32),
    )
    stale_writer = BatchWriter(engine, IndexWriter(index, stale), worker="w")
    stale_writer.hold(held)
    stale_writer.finish(again, 2.0, None)
    stale_writer.publish()
    latest = load_current(index)
    assert gone not in latest and again in latest
    assert gone in latest.vectors.deleted
    assert not latest.known(np.array([unit_id(gone, 0)])).any()
    assert latest.known(np.array([unit_id(again, 0)])).all()


def test_remove_videos_deletes_the_rows_it_finds(tmp_path, fill) -> None:
    engine = fill()
    assert remove_videos(engine, tmp_path / "index", [2, 3, 999]) == [2, 3]  # nothing indexed
    assert set(_rows(engine, [1, 2, 3, 4])) == {1, 4}
    assert sum(queue.counts(engine).values()) == 11
