"""A delete that races the indexer always wins: each interleaving of ``remove_videos`` with a
worker's stages (claimed, decoded and embedded, held, published, completed), forced in order,
leaves the video in no search of the latest build and its row gone, the rest of its batch
indexed. Real queue (SQLite, and PostgreSQL where configured), real decoding of generated
videos, a real tiny model, real FAISS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db import queue
from db.connect import make_engine
from db.schema import Video
from index.reader import Build, load_current
from index.writer import IndexWriter, compact, delete_videos
from indexer.embedder import EmbeddedBatch, Embedder, Unit
from indexer.reader import Where, read_video
from indexer.segments import SegmentCfg
from indexer.writer import BatchWriter, remove_videos
from model import HANet, create_model
from tests.index.conftest import CHECKPOINT, add, videos

WORKER = "host:1:race"
GONE = 3  # the video deleted in each race; 1 is indexed before, 2 and 4 share its batch


@pytest.fixture
def engine(db_url, synth_corpus) -> Iterator[Engine]:
    """A migrated queue holding four generated videos (ids 1..4)."""
    engine = make_engine(db_url)
    for i, path in enumerate(sorted(synth_corpus.glob("synth*.mp4"))[:4]):
        queue.enqueue(engine, media_path=str(path), sha256=f"{i:064d}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> HANet:
    m = create_model("tiny")
    m.save(str(tmp_path_factory.mktemp("model") / "m.pt"))
    return m


def _embed(model: HANet, claims: list[queue.Claim]) -> EmbeddedBatch:
    """The reader's and the embedder's stages for these claims (clips: one segment each)."""
    t, size = model.cfg.max_frames, model.preprocess.image_size
    reads = [read_video(c, t, size, SegmentCfg(), Where()) for c in claims]
    assert all(r.last and len(r.chunk.segments) == 1 for r in reads)
    return Embedder(model)([Unit(r.video_id, 0, r.chunk.segments[0]) for r in reads])


def _hold(writer: BatchWriter, batch: EmbeddedBatch) -> None:
    """What the job does with a batch of clips read to their end: held, then finished."""
    writer.hold(batch)
    for video_id in batch.video_ids:
        writer.finish(video_id, 2.0, None)


def _writer(engine: Engine, model: HANet, index_dir: Path) -> BatchWriter:
    index = IndexWriter.open(index_dir, model.cfg, model.checkpoint_sha256, "Flat")
    return BatchWriter(engine, index, worker=WORKER)


def _start(engine: Engine, model: HANet, index_dir: Path) -> tuple[BatchWriter, list]:
    """Video 1 indexed and published (a build exists); then videos 2..4 claimed."""
    writer = _writer(engine, model, index_dir)
    _hold(writer, _embed(model, queue.claim(engine, worker=WORKER, limit=1)))
    assert writer.publish() == [1]
    claims = queue.claim(engine, worker=WORKER, limit=10)
    assert [c.video_id for c in claims] == [2, 3, 4]
    return writer, claims


def _found(build: Build, batch: EmbeddedBatch, video_id: int) -> set[int]:
    """Videos found at any level by queries made of ``video_id``'s own vectors."""
    own = batch.embeddings.select([batch.video_ids.index(video_id)])
    queries = {
        "event": own.global_.numpy(),
        "action": own.action_segments[0].numpy(),
        "entity": own.entity_segments[0].numpy(),
    }
    found: set[int] = set()
    for level, q in queries.items():
        for ids, _, _ in build.top_videos(level, q, 50):
            found.update(ids.tolist())
    return found


def _assert_the_delete_won(engine: Engine, index_dir: Path, batch: EmbeddedBatch) -> None:
    latest = load_current(index_dir)
    assert latest.video_ids() == [1, 2, 4] and GONE not in latest
    assert GONE not in _found(latest, batch, GONE)
    assert {2, 4} <= _found(latest, batch, 2) | _found(latest, batch, 4)
    with Session(engine) as session:
        rows = {v.id: v.status for v in session.query(Video)}
    assert rows == {1: "indexed", 2: "indexed", 4: "indexed"}


def test_deleted_after_the_claim_before_decoding(engine, model, tmp_path) -> None:
    writer, claims = _start(engine, model, tmp_path / "index")
    assert remove_videos(engine, tmp_path / "index", [GONE]) == [GONE]
    batch = _embed(model, claims)  # the reader still decodes the file it was given
    _hold(writer, batch)
    assert writer.publish() == [2, 4]
    _assert_the_delete_won(engine, tmp_path / "index", batch)


def test_deleted_while_held(engine, model, tmp_path) -> None:
    writer, claims = _start(engine, model, tmp_path / "index")
    batch = _embed(model, claims)
    _hold(writer, batch)
    assert remove_videos(engine, tmp_path / "index", [GONE]) == [GONE]
    assert writer.publish() == [2, 4]
    _assert_the_delete_won(engine, tmp_path / "index", batch)


def test_a_held_batch_deleted_entirely_publishes_nothing(engine, model, tmp_path) -> None:
    writer, claims = _start(engine, model, tmp_path / "index")
    _hold(writer, _embed(model, claims))
    name = load_current(tmp_path / "index").name
    assert remove_videos(engine, tmp_path / "index", [2, 3, 4]) == [2, 3, 4]
    assert writer.publish() == [] and writer.held_ids == []
    assert load_current(tmp_path / "index").video_ids() == [1]
    assert load_current(tmp_path / "index").name != name  # only the tombstone version


def test_deleted_after_the_row_check_before_the_publish(engine, model, tmp_path) -> None:
    """The writer's two steps by hand: the rows are checked (all there), the video is deleted,
    then the index publish (the worker's IndexWriter predates the delete) and the rows."""
    writer, claims = _start(engine, model, tmp_path / "index")
    batch = _embed(model, claims)
    with Session(engine) as session:
        assert session.query(Video).filter(Video.id.in_(batch.video_ids)).count() == 3
    assert remove_videos(engine, tmp_path / "index", [GONE]) == [GONE]
    writer.index.publish(batch.video_ids, batch.embeddings, batch.frame_times)
    assert writer.index.build.name == load_current(tmp_path / "index").name
    done = [v for v in batch.video_ids if _complete(engine, writer, v)]
    assert done == [2, 4]
    _assert_the_delete_won(engine, tmp_path / "index", batch)


def test_deleted_after_the_publish_before_the_rows(engine, model, tmp_path) -> None:
    writer, claims = _start(engine, model, tmp_path / "index")
    batch = _embed(model, claims)
    writer.index.publish(batch.video_ids, batch.embeddings, batch.frame_times)
    assert GONE in load_current(tmp_path / "index")
    assert remove_videos(engine, tmp_path / "index", [GONE]) == [GONE]
    done = [v for v in batch.video_ids if _complete(engine, writer, v)]
    assert done == [2, 4]
    _assert_the_delete_won(engine, tmp_path / "index", batch)


def _complete(engine: Engine, writer: BatchWriter, video_id: int) -> bool:
    return queue.complete(
        engine,
        video_id,
        worker=WORKER,
        duration_s=2.0,
        checkpoint_sha256=writer.index.checkpoint_sha256,
        concepts=None,
    )


def test_a_worker_publishing_what_another_deleted(index_dir, cfg) -> None:
    """Two writers on one index: the second's delete tombstones a video the first holds and
    has never published; the first's publish leaves it out, also after a compaction."""
    first = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    second = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    add(second, [13])
    delete_videos(index_dir, [14, 2])  # 14: with the first worker, not in the build yet
    add(first, [14, 15])
    latest = load_current(index_dir)
    assert 14 not in latest and {13, 15} <= set(latest.video_ids()) and 2 not in latest
    assert latest.summary()["vectors"]["event"] == 14  # 1..13 and 15: no vectors for 14
    compact(index_dir)
    add(first, [14, 16])  # a late publish after compaction: still refused
    add(second, [2])
    latest = load_current(index_dir)
    assert 14 not in latest and 2 not in latest and 16 in latest
    own = videos(cfg, [14, 2])
    for i in range(2):
        for ids, _, _ in latest.top_videos("event", own.global_[i : i + 1].numpy(), 50):
            assert not {2, 14} & set(ids.tolist())
    assert latest.summary()["vectors"]["event"] == 14  # 1, 3..13, 15, 16
