"""The indexing job's writer, and deletes: what changes the index and the rows together.

``BatchWriter`` holds embedded units (segments) until their videos are read to the end, publishes
whole videos into the index together, and only then marks their rows indexed: a worker that dies
in between leaves the rows to be claimed again, and re-indexing a video replaces all its units,
so nothing is lost or doubled."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video
from index.reader import BuildError
from index.writer import IndexWriter, delete_videos
from indexer.embedder import EmbeddedBatch
from indexer.reader import Undecodable

# Why a video whose row exists was refused by the index: its id is tombstoned, which only an id
# given twice explains (SQLite databases from before migration 0004 reused a deleted newest
# video's id); a new row gets a new id.
REUSED_ID = (
    "the index holds a deletion of this video's id (given twice by a database from before ids "
    "were never reused): delete the video and add it again"
)


@dataclass
class Held:
    """A video being indexed by this worker: its embedded units so far and, once its last
    chunk was read, its duration and concepts."""

    video_id: int
    units: list[EmbeddedBatch] = field(default_factory=list)
    finished: bool = False
    duration_s: float = 0.0
    concepts: dict | None = None

    @property
    def segments(self) -> int:
        return sum(len(b) for b in self.units)


class BatchWriter:
    """One worker's writes: held (embedded, not yet published) units, published by whole
    videos at most every ``publish_interval_s`` while more work is queued (each publish
    rewrites the level indexes, which readers then reload) and at once when asked to."""

    def __init__(
        self, engine: Engine, index: IndexWriter, *, worker: str, publish_interval_s: float = 0.0
    ) -> None:
        self.engine, self.index, self.worker = engine, index, worker
        self.publish_interval_s = publish_interval_s
        self._held: dict[int, Held] = {}
        self._last_publish = time.monotonic()

    @property
    def held_ids(self) -> list[int]:
        """Videos with units embedded and not yet published (their jobs' leases must be
        kept)."""
        return list(self._held)

    def record_failures(self, failures: list[Undecodable]) -> dict[int, str]:
        """Mark videos failed with their reasons (units held of them are dropped); returns
        those still this worker's."""
        for f in failures:
            self._held.pop(f.video_id, None)
        return {f.video_id: f.reason for f in failures if self._fail(f.video_id, f.reason)}

    def hold(self, batch: EmbeddedBatch) -> None:
        """Keep embedded units until their videos are finished and published."""
        rows: dict[int, list[int]] = {}
        for i, video_id in enumerate(batch.video_ids):
            rows.setdefault(video_id, []).append(i)
        for video_id, which in rows.items():
            held = self._held.setdefault(video_id, Held(video_id))
            held.units.append(batch if len(which) == len(batch) else batch.select(which))

    def units(self, video_id: int) -> EmbeddedBatch | None:
        """The units held of a video, in segment order (None: none)."""
        held = self._held.get(video_id)
        return None if held is None or not held.units else self.units_of(held)

    def finish(self, video_id: int, duration_s: float, concepts: dict | None) -> None:
        """A video read to its end: publishable with the units held of it."""
        held = self._held.setdefault(video_id, Held(video_id))
        held.finished, held.duration_s, held.concepts = True, duration_s, concepts

    def publish_if_due(self, *, more_queued: bool) -> list[int]:
        """``publish`` unless more work is queued and the last one is recent."""
        if more_queued and time.monotonic() - self._last_publish < self.publish_interval_s:
            return []
        return self.publish()

    def publish(self) -> list[int]:
        """Publish the finished videos whose rows still exist (a video deleted while held is
        dropped; one deleted after this check is refused by its tombstone), then mark the
        published ones' rows indexed (a publish that raises leaves them processing); a video
        refused by the index whose row is still there is marked failed (``REUSED_ID``), never
        indexed without being searchable. Unfinished videos stay held. Returns the ids marked
        indexed: those whose jobs this worker still held."""
        finished = [h for h in self._held.values() if h.finished]
        ready = self._existing([h for h in finished if h.units])
        published: set[int] = set()
        if ready:
            units = EmbeddedBatch.cat([self.units_of(h) for h in ready])
            published = set(
                self.index.publish(
                    units.video_ids, units.embeddings, units.frame_times, units.spans
                )
            )
        for held in finished:  # only now: a publish that raises leaves them held
            del self._held[held.video_id]
        self._last_publish = time.monotonic()
        for held in ready:  # no row left (deleted after the check), or an id given twice
            if held.video_id not in published:
                self._fail(held.video_id, REUSED_ID)
        return self._complete([h for h in ready if h.video_id in published])

    @staticmethod
    def units_of(held: Held) -> EmbeddedBatch:
        return EmbeddedBatch.cat(held.units) if len(held.units) > 1 else held.units[0]

    def _existing(self, held: list[Held]) -> list[Held]:
        """The held videos less those whose rows were deleted meanwhile (one query)."""
        if not held:
            return []
        with Session(self.engine) as session:
            ids = [h.video_id for h in held]
            found = set(session.scalars(select(Video.id).where(Video.id.in_(ids))))
        return [h for h in held if h.video_id in found]

    def _fail(self, video_id: int, reason: str) -> bool:
        """Record why a video cannot be indexed; whether its job was still this worker's."""
        return queue.fail(self.engine, video_id, worker=self.worker, reason=reason)

    def _complete(self, done: list[Held]) -> list[int]:
        """Mark published videos' rows indexed; returns those whose jobs were still ours."""
        return [
            h.video_id
            for h in done
            if queue.complete(
                self.engine,
                h.video_id,
                worker=self.worker,
                duration_s=h.duration_s,
                checkpoint_sha256=self.index.checkpoint_sha256,
                concepts=h.concepts,
                segments=h.segments,
            )
        ]


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
