"""The indexing job: claim -> read -> embed -> write, until the queue is empty (or, watching,
until stopped).

    claims = queue.claim(...)       db.queue: pending jobs and their media paths, leased
    batch = reader.read(claims)     indexer.reader: PyAV decoding into segments, in processes
    embedded = embedder(units)      indexer.embedder: the HANet video branch, per segment
    writer.hold(embedded)           indexer.writer: whole videos into the index, then the rows
                                    `indexed`

Decoding of the next batch overlaps the model's work on this one; a long video is read in
chunks of segments, embedded as they come, its units spooled to disk (memory bounded whatever
its length), its progress written to its row. Leases are renewed while the worker holds the
jobs; a stopped worker publishes what it finished and hands back what it claimed ahead."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from tqdm import tqdm

from db import outbox, queue
from db.media import MediaCfg
from db.queue import Claim
from index.reader import BuildError
from index.rows import DEFAULT_ROW_FORMAT
from index.writer import IndexWriter
from indexer.claims import local_claim
from indexer.embedder import Embedder, Unit
from indexer.fetch_url import FetchCfg
from indexer.reader import Decoded, ReadBatch, Reader, Undecodable
from indexer.segments import SegmentCfg
from indexer.spool import release_free_memory
from indexer.writer import SPILL_UNITS, BatchWriter
from model import HANet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexingCfg:
    """How an indexer worker works (from the deployment settings, ``HanetSettings.indexing``)."""

    factory: str = "Flat"  # FAISS factory string per level, for a new build
    rows: str = DEFAULT_ROW_FORMAT  # rerank row format of a new build (index.rows)
    batch_size: int = 16  # videos per model batch
    decode_workers: int = 2  # decoding processes
    publish_interval_s: float = 0.0  # while more is queued, publish at most this often
    lease_s: float = 300.0  # a claimed job's lease, renewed while the worker holds it
    poll_s: float = 2.0  # how often a watching worker looks for new jobs
    segments: SegmentCfg = field(default_factory=SegmentCfg)  # how videos are cut into units
    fetch: FetchCfg | None = None  # how videos ingested by URL are downloaded (None: they fail)
    media: MediaCfg | None = None  # files stored in the database, and this host's copies
    events: bool = False  # write a webhook event (db.outbox) when a video is indexed or fails
    spill_units: int = SPILL_UNITS  # a video with more units held keeps them on disk


def reader_for(model: HANet, cfg: IndexingCfg) -> Reader:
    """The decoding stage for ``model``'s input (T frames of its image size per segment)."""
    return Reader(
        model.cfg.max_frames, model.preprocess.image_size, cfg.decode_workers, cfg.segments
    )


@dataclass
class Summary:
    indexed: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # video id -> reason
    seconds: float = 0.0


def run_indexing(
    engine: Engine,
    model: HANet,
    index_dir: Path,
    cfg: IndexingCfg,
    *,
    watch: bool = False,
    stop: threading.Event | None = None,
    progress: bool = True,
) -> Summary:
    """Index queued videos until the queue is empty (or, with ``watch``, until ``stop``).
    Raises ``BuildError`` when the published build belongs to another checkpoint."""
    start, worker = time.monotonic(), queue.worker_name()
    engine = outbox.notifying(engine) if cfg.events else engine
    released = queue.release_dead_workers(engine)
    if released:
        log.info("took back %d jobs of dead workers on this host", released)
    checkpoint = model.checkpoint_sha256 or "unsaved"
    index = IndexWriter.open(index_dir, model.cfg, checkpoint, cfg.factory, cfg.rows)
    jobs = _Jobs(engine, worker, cfg)
    stages = Stages(
        reader_for(model, cfg),
        Embedder(model),
        BatchWriter(
            engine,
            index,
            worker=worker,
            publish_interval_s=cfg.publish_interval_s,
            spool_dir=index_dir / ".spool",
            spill_units=cfg.spill_units,
        ),
    )
    bar = tqdm(total=jobs.pending(), unit="video", desc="index", disable=not progress)
    with stages.reader, contextlib.closing(bar):
        summary = work_queue(jobs, stages, bar, watch=watch, stop=stop or threading.Event())
    summary.seconds = time.monotonic() - start
    return summary


@dataclass(frozen=True)
class _Jobs:
    """This worker's side of the queue."""

    engine: Engine
    worker: str
    cfg: IndexingCfg

    def claim(self) -> list[Claim]:
        """Jobs to read, each with a file on this host (``indexer.claims``: downloaded or
        copied from the database first; those that fail to are failed, and left out)."""
        limit, lease_s = self.cfg.batch_size, self.cfg.lease_s
        claims = queue.claim(self.engine, worker=self.worker, limit=limit, lease_s=lease_s)
        fetch, store = self.cfg.fetch, self.cfg.media
        made = (local_claim(self.engine, self.worker, c, fetch, store, lease_s) for c in claims)
        return [c for c in made if c is not None]

    def renew(self, video_ids: list[int]) -> None:
        queue.renew(self.engine, worker=self.worker, ids=video_ids, lease_s=self.cfg.lease_s)

    def progress(self, video_id: int, indexed_s: float, duration_s: float) -> None:
        queue.progress(
            self.engine, video_id, worker=self.worker, indexed_s=indexed_s, duration_s=duration_s
        )

    def release(self, video_ids: list[int]) -> None:
        queue.release(self.engine, worker=self.worker, ids=video_ids)

    def pending(self) -> int:
        return queue.counts(self.engine)["pending"]


@dataclass(frozen=True)
class Stages:
    """The pipeline a job runs its claims through (the writer decides where they go)."""

    reader: Reader
    embedder: Embedder
    writer: BatchWriter


class Jobs(Protocol):
    """Where a job's work comes from: the queue (``_Jobs``) or a rebuild's work list."""

    cfg: IndexingCfg

    def claim(self) -> list[Claim]: ...
    def renew(self, video_ids: list[int]) -> None: ...
    def progress(self, video_id: int, indexed_s: float, duration_s: float) -> None: ...
    def release(self, video_ids: list[int]) -> None: ...
    def pending(self) -> int: ...


def work_queue(
    jobs: Jobs, stages: Stages, bar: tqdm, *, watch: bool, stop: threading.Event
) -> Summary:
    """The job's loop: one batch indexed while the next one decodes, until nothing is left
    (or, with ``watch``, until ``stop``). A publish refused because the published build now
    belongs to another checkpoint (a rebuild swapped in) gives every job this worker holds
    back, unfinished, for a worker of that checkpoint, and raises the BuildError."""
    summary = Summary()
    batch = following = stages.reader.read(jobs.claim())
    try:
        while (batch or watch) and not stop.is_set():
            if not batch:  # watching an empty queue
                stop.wait(jobs.cfg.poll_s)
                batch = following = stages.reader.read(jobs.claim())
                bar.total = bar.n + jobs.pending() + len(batch)
                continue
            following = stages.reader.read(jobs.claim())  # decodes while this one is embedded
            _Batch(jobs, stages, summary).index(batch, following)
            jobs.renew(following.video_ids + stages.writer.held_ids)
            bar.update(len(batch))
            bar.set_postfix(indexed=summary.indexed, failed=len(summary.failed))
            batch = following
        summary.indexed += len(stages.writer.publish())  # stopped: the embedded are published
    except BuildError:
        held = {*stages.writer.held_ids, *batch.video_ids, *following.video_ids}
        jobs.release(sorted(held))
        log.error(
            "the published index build is no longer this worker's checkpoint's (a rebuild "
            "swapped in a new one?): gave %d jobs back to the queue for a worker running the "
            "new checkpoint, and stopped",
            len(held),
        )
        raise
    if batch:  # stopped with a batch claimed and decoding: hand it back
        jobs.release(batch.video_ids)
    return summary


class _Batch:
    """One batch indexed: its reads taken as they come (a long video's chunks one after
    another), their segments embedded by model batches of ``batch_size`` units, the videos
    finished when their last chunk is embedded, published when due."""

    def __init__(self, jobs: Jobs, stages: Stages, summary: Summary) -> None:
        self.jobs, self.stages, self.summary = jobs, stages, summary
        self.units: list[Unit] = []  # decoded, not yet embedded
        self.ended: dict[int, float] = {}  # videos read to the end -> duration
        self.reached: dict[int, float] = {}  # video -> the end of its last segment read
        self.renewed = time.monotonic()

    def index(self, batch: ReadBatch, following: ReadBatch) -> None:
        for read in batch:
            if isinstance(read, Undecodable):
                self._undecodable(read)
            else:
                self._decoded(read)
            if time.monotonic() - self.renewed > self.jobs.cfg.lease_s / 3:  # a long video
                self.jobs.renew(batch.video_ids + following.video_ids + self.stages.writer.held_ids)
                self.renewed = time.monotonic()
        self._embed(everything=True)
        writer = self.stages.writer
        for video_id, duration_s in self.ended.items():
            units = writer.units(video_id)
            if units is None:  # nothing of it could be read after all
                reason = "no segment of the video could be decoded"
                self.summary.failed.update(writer.record_failures([Undecodable(video_id, reason)]))
                continue
            writer.finish(video_id, duration_s, self.stages.embedder.concepts(units.embeddings))
        self.summary.indexed += len(writer.publish_if_due(more_queued=bool(following)))
        release_free_memory()  # what the batch's frames, model and publish freed

    def _decoded(self, read: Decoded) -> None:
        chunk = read.chunk
        self.units += [
            Unit(read.video_id, read.first + i, segment) for i, segment in enumerate(chunk.segments)
        ]
        if chunk.segments:
            self.reached[read.video_id] = chunk.segments[-1].end_s
        if read.last:  # a piece past the end read no frame: the segments before tell the end
            self.ended[read.video_id] = max(chunk.duration_s, self.reached.get(read.video_id, 0))
        else:  # a long video: its progress on its row, its segments embedded as they come
            reached = self.reached.get(read.video_id, 0.0)
            self.jobs.progress(read.video_id, max(chunk.read_until_s, reached), chunk.duration_s)
            self._embed(everything=False)
            release_free_memory()  # freed frames and activations, so the heap does not grow

    def _undecodable(self, read: Undecodable) -> None:
        if not read.first:  # nothing of it was read
            self.summary.failed.update(self.stages.writer.record_failures([read]))
            return
        log.warning(  # a later chunk failed: indexed with the segments read before
            "video %d: %s; indexed with its first %d segments",
            read.video_id,
            read.reason,
            read.first,
        )
        self.ended[read.video_id] = self.reached[read.video_id]

    def _embed(self, *, everything: bool) -> None:
        """Embed the decoded units by full model batches (all of them with ``everything``)."""
        size = self.jobs.cfg.batch_size
        while self.units and (everything or len(self.units) >= size):
            now, self.units = self.units[:size], self.units[size:]
            self.stages.writer.hold(self.stages.embedder(now))
