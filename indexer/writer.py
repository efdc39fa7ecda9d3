"""The indexing job's writer, and deletes: what changes the index and the rows together.

``BatchWriter`` holds embedded units (segments) until their videos are read to the end, publishes
whole videos into the index together, and only then marks their rows indexed: a worker that dies
in between leaves the rows to be claimed again, and re-indexing a video replaces all its units,
so nothing is lost or doubled. A video with more than ``spill_units`` units held (a long one)
keeps them on disk (``indexer.spool``) rather than in memory, and is published on its own."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
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
from indexer.spool import Spool, remove_spools

log = logging.getLogger(__name__)

# Why a video whose row exists was refused by the index: its id is tombstoned, which only an id
# given twice explains (SQLite databases from before migration 0004 reused a deleted newest
# video's id); a new row gets a new id.
REUSED_ID = (
    "the index holds a deletion of this video's id (given twice by a database from before ids "
    "were never reused): delete the video and add it again"
)


# Units of one video held in memory before they move to a spool on disk (a long video).
SPILL_UNITS = 64


@dataclass
class Held:
    """A video being indexed by this worker: its embedded units so far (in memory, or those
    before them in ``spool``) and, once its last chunk was read, its duration and concepts."""

    video_id: int
    units: list[EmbeddedBatch] = field(default_factory=list)
    finished: bool = False
    duration_s: float = 0.0
    concepts: dict | None = None
    spool: Spool | None = None

    @property
    def segments(self) -> int:
        return sum(len(b) for b in self.units) + (self.spool.rows if self.spool else 0)

    def drop(self) -> None:
        """Forget the units (the spool's files too)."""
        self.units = []
        if self.spool is not None:
            self.spool.remove()


class BatchWriter:
    """One worker's writes: held (embedded, not yet published) units, published by whole
    videos at most every ``publish_interval_s`` while more work is queued (each publish
    rewrites the level indexes, which readers then reload) and at once when asked to."""

    def __init__(
        self,
        engine: Engine,
        index: IndexWriter,
        *,
        worker: str,
        publish_interval_s: float = 0.0,
        spool_dir: Path | None = None,
        spill_units: int = SPILL_UNITS,
    ) -> None:
        """``spool_dir``: where long videos' units wait on disk (default: ``.spool`` in the
        index folder; None with an index that has no folder: they stay in memory)."""
        self.engine, self.index, self.worker = engine, index, worker
        self.publish_interval_s = publish_interval_s
        folder = getattr(index, "index_dir", None)
        self.spool_dir = spool_dir or (Path(folder) / ".spool" if folder is not None else None)
        self.spill_units = spill_units
        self._token = uuid.uuid4().hex[:8]  # this writer's spools: <video_id>-<token>
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
            if (held := self._held.pop(f.video_id, None)) is not None:
                held.drop()
        return {f.video_id: f.reason for f in failures if self._fail(f.video_id, f.reason)}

    def hold(self, batch: EmbeddedBatch) -> None:
        """Keep embedded units until their videos are finished and published."""
        rows: dict[int, list[int]] = {}
        for i, video_id in enumerate(batch.video_ids):
            rows.setdefault(video_id, []).append(i)
        for video_id, which in rows.items():
            held = self._start(video_id)
            held.units.append(batch if len(which) == len(batch) else batch.select(which))
            if held.spool is not None or held.segments > self.spill_units:
                self._spill(held)

    def units(self, video_id: int) -> EmbeddedBatch | None:
        """The units held of a video, in segment order (None: none); a spooled video's on
        memory maps of its spool."""
        held = self._held.get(video_id)
        return None if held is None or not held.segments else self.units_of(held)

    def finish(self, video_id: int, duration_s: float, concepts: dict | None) -> None:
        """A video read to its end: publishable with the units held of it."""
        held = self._start(video_id)
        held.finished, held.duration_s, held.concepts = True, duration_s, concepts

    def _start(self, video_id: int) -> Held:
        """The video's ``Held``; a new one removes the spools a killed worker left of it (the
        queue gives a video to one worker at a time, and a job taken again starts over)."""
        held = self._held.get(video_id)
        if held is None:
            held = self._held[video_id] = Held(video_id)
            if self.spool_dir is not None:
                remove_spools(self.spool_dir, [video_id])
        return held

    def _spill(self, held: Held) -> None:
        """Move the units held in memory of a long video to its spool (made at the first
        spill), when the writer has a spool folder."""
        if self.spool_dir is None:
            return
        if held.spool is None:
            held.spool = Spool(self.spool_dir / f"{held.video_id}-{self._token}", held.video_id)
        for batch in held.units:
            held.spool.append(batch)
        held.units = []

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
        ready = self._existing([h for h in finished if h.segments])
        published: set[int] = set()
        in_memory = [h for h in ready if h.spool is None]
        if in_memory:
            published |= self._publish(EmbeddedBatch.cat([self.units_of(h) for h in in_memory]))
        for held in ready:  # long videos one by one, from their spools' memory maps
            if held.spool is not None:
                published |= self._publish_spooled(held)
        for held in finished:  # only now: a publish that raises leaves them held
            del self._held[held.video_id]
        self._last_publish = time.monotonic()
        for held in ready:  # no row left (deleted after the check), or an id given twice
            if held.video_id not in published:
                self._fail(held.video_id, REUSED_ID)
        done = self._complete([h for h in ready if h.video_id in published])
        for held in finished:
            held.drop()
        return done

    def _publish(self, units: EmbeddedBatch) -> set[int]:
        return set(
            self.index.publish(units.video_ids, units.embeddings, units.frame_times, units.spans)
        )

    def _publish_spooled(self, held: Held) -> set[int]:
        """Publish one spooled video; nothing when its spool was removed meanwhile (its
        video deleted since ``_existing`` looked: ``remove_videos``)."""
        try:
            units = self.units_of(held)
        except FileNotFoundError:
            log.warning("video %d: its spool was removed (deleted meanwhile?)", held.video_id)
            return set()
        return self._publish(units)

    @staticmethod
    def units_of(held: Held) -> EmbeddedBatch:
        """Every unit held of a video, in segment order."""
        if held.spool is not None:
            for batch in held.units:  # what came after its last spill
                held.spool.append(batch)
            held.units = []
            return held.spool.load()
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
        remove_spools(index_dir / ".spool", found)  # a worker's, or a killed worker's
    return found
