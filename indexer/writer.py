"""The indexing job's writer, and deletes: what changes the index and the rows together.

``BatchWriter`` holds embedded batches, publishes them into the index together, and only then
marks their rows indexed: a worker that dies in between leaves the rows to be claimed again,
and re-indexing a video replaces its vectors, so nothing is lost or doubled."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video
from index.reader import BuildError
from index.writer import IndexWriter, delete_videos
from indexer.embedder import EmbeddedBatch
from indexer.reader import Undecodable
from model import VideoEmbeddings

# Why a video whose row exists was refused by the index: its id is tombstoned, which only an id
# given twice explains (SQLite databases from before migration 0004 reused a deleted newest
# video's id); a new row gets a new id.
REUSED_ID = (
    "the index holds a deletion of this video's id (given twice by a database from before ids "
    "were never reused): delete the video and add it again"
)


class BatchWriter:
    """One worker's writes: held (embedded, not yet published) batches, published at most
    every ``publish_interval_s`` while more work is queued (each publish rewrites the level
    indexes, which readers then reload) and at once when asked to."""

    def __init__(
        self, engine: Engine, index: IndexWriter, *, worker: str, publish_interval_s: float = 0.0
    ) -> None:
        self.engine, self.index, self.worker = engine, index, worker
        self.publish_interval_s = publish_interval_s
        self._held: list[EmbeddedBatch] = []
        self._last_publish = time.monotonic()

    @property
    def held_ids(self) -> list[int]:
        """Videos embedded and not yet published (their jobs' leases must be kept)."""
        return [video_id for batch in self._held for video_id in batch.video_ids]

    def record_failures(self, failures: list[Undecodable]) -> dict[int, str]:
        """Mark videos failed with their reasons; returns those still this worker's."""
        return {f.video_id: f.reason for f in failures if self._fail(f.video_id, f.reason)}

    def hold(self, batch: EmbeddedBatch) -> None:
        self._held.append(batch)

    def publish_if_due(self, *, more_queued: bool) -> list[int]:
        """``publish`` unless more work is queued and the last one is recent."""
        if more_queued and time.monotonic() - self._last_publish < self.publish_interval_s:
            return []
        return self.publish()

    def publish(self) -> list[int]:
        """Publish the held videos whose rows still exist (a video deleted while held is
        dropped; one deleted after this check is refused by its tombstone), then mark the
        published ones' rows indexed (a publish that raises leaves them processing); a video
        refused by the index whose row is still there is marked failed (``REUSED_ID``), never
        indexed without being searchable. Returns the ids marked indexed: those whose jobs this
        worker still held."""
        held = self._existing(self._held)
        published: set[int] = set()
        if held:
            published = set(
                self.index.publish(
                    [video_id for batch in held for video_id in batch.video_ids],
                    VideoEmbeddings.cat([batch.embeddings for batch in held]),
                    np.concatenate([batch.frame_times for batch in held]),
                )
            )
        self._held, self._last_publish = [], time.monotonic()
        refused = [v for batch in held for v in batch.video_ids if v not in published]
        for video_id in refused:  # no row left (deleted after the check), or an id given twice
            self._fail(video_id, REUSED_ID)
        return [video_id for batch in held for video_id in self._complete(_only(batch, published))]

    def _existing(self, held: list[EmbeddedBatch]) -> list[EmbeddedBatch]:
        """The held batches less the videos whose rows were deleted meanwhile (one query)."""
        ids = [video_id for batch in held for video_id in batch.video_ids]
        if not ids:
            return []
        with Session(self.engine) as session:
            found = set(session.scalars(select(Video.id).where(Video.id.in_(ids))))
        if len(found) == len(ids):
            return held
        return [b for b in (_only(batch, found) for batch in held) if b.video_ids]

    def _fail(self, video_id: int, reason: str) -> bool:
        """Record why a video cannot be indexed; whether its job was still this worker's."""
        return queue.fail(self.engine, video_id, worker=self.worker, reason=reason)

    def _complete(self, batch: EmbeddedBatch) -> list[int]:
        """Mark a published batch's rows indexed; returns those whose jobs were still ours."""
        rows = zip(batch.video_ids, batch.durations_s, batch.concepts, strict=True)
        return [
            video_id
            for video_id, duration_s, concepts in rows
            if queue.complete(
                self.engine,
                video_id,
                worker=self.worker,
                duration_s=duration_s,
                checkpoint_sha256=self.index.checkpoint_sha256,
                concepts=concepts,
            )
        ]


def _only(batch: EmbeddedBatch, video_ids: set[int]) -> EmbeddedBatch:
    """The rows of ``batch`` for these videos."""
    keep = [i for i, video_id in enumerate(batch.video_ids) if video_id in video_ids]
    if len(keep) == len(batch.video_ids):
        return batch
    return EmbeddedBatch(
        [batch.video_ids[i] for i in keep],
        batch.embeddings.select(keep),
        batch.frame_times[keep],
        [batch.durations_s[i] for i in keep],
        [batch.concepts[i] for i in keep],
    )


def remove_videos(engine: Engine, index_dir: Path, video_ids: list[int]) -> list[int]:
    """Delete videos' rows and tombstone them in the published build (gone from search at once,
    from the index files at compaction; never published by a worker that still holds them).
    Returns the ids that existed."""
    with Session(engine) as session, session.begin():
        found = list(session.scalars(select(Video.id).where(Video.id.in_(video_ids))))
        session.execute(delete(Video).where(Video.id.in_(found)))
    if found:
        with contextlib.suppress(BuildError):  # nothing indexed yet: the rows were all there was
            delete_videos(index_dir, found)
    return found
