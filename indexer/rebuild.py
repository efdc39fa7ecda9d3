"""The rebuild job: every indexed video re-encoded with the configured checkpoint into a new
build, which swaps in atomically once complete; the videos' rows stay indexed and serve from the
live build meanwhile.

    rebuilds.start(...)           db.rebuilds: the one running rebuild (new, or a killed one
                                  resumed) and its work list, every indexed video
    work_queue(work list)         indexer.job: claim -> read -> embed -> publish into the new
                                  build under ``index/.rebuild`` -> items done
    catch-up rounds               what the live build gained meanwhile (uploads indexed by the
                                  serving worker) goes on the work list
    swap, under the write lock    the last of the catch-up, the live build's tombstones (and
                                  those of rows deleted since), the swap marked begun in the
                                  database (no cancel from then on), CURRENT -> the new build

Nothing can be published into the live build while the swap holds its write lock, so no video
indexed and no delete falls between the last catch-up and the swap. A worker of the old
checkpoint cannot publish into the new build (``IndexWriter`` refuses a build of another
checkpoint): it gives its jobs back to the queue and stops (``indexer.job.work_queue``).

In Milvus (``index.milvus.resolve``) the same job writes a build of its own collections
(``index.milvus_rebuild``); with no lock across hosts, the swap is one write of the published
build's record, after which one more catch-up takes what the replaced build gained just before
it, and the replaced build's collections are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from tqdm import tqdm

from db import queue, rebuilds, worklist
from db.media import MediaMissing
from db.queue import Claim
from db.rebuilds import RebuildError, Started
from index import milvus_rebuild
from index.milvus import MilvusTarget, resolve
from index.milvus_index import MilvusWriter, load_current
from index.reader import current_name
from index.writer import IndexWriter, contents, delete_videos, promote, reclaim, writing
from indexer.claims import local_file
from indexer.embedder import Embedder
from indexer.job import IndexingCfg, Stages, reader_for, work_queue
from indexer.writer import BatchWriter, Held
from model import HANet

log = logging.getLogger(__name__)

CATCH_UP_ROUNDS = 5  # rounds outside the lock before the last catch-up is done under it


def staging_dir(index_dir: Path) -> Path:
    """Where a rebuild prepares its build: inside the index folder (same file system, so the
    swap is a rename; shared by every host that shares the index, so any can resume it)."""
    return index_dir / ".rebuild"


@dataclass
class RebuildSummary:
    rebuild_id: int
    resumed: bool
    stopped: bool = False  # asked to stop before the swap: `hanet index rebuild` resumes it
    build: str | None = None  # the published version, once swapped in
    indexed: int = 0  # videos in the new build
    failed: dict[int, str] = field(default_factory=dict)  # video id -> reason (rows failed)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Rebuild:
    """This process's hold on the running rebuild, and its work list (``indexer.job.Jobs``)."""

    engine: Engine
    id: int
    worker: str
    checkpoint: str
    cfg: IndexingCfg
    index_dir: Path
    staging: Path
    target: MilvusTarget | None = None  # the index in Milvus (else FAISS files in index_dir)

    def claim(self) -> list[Claim]:
        """Items to encode, each with a file on this host (a file stored in the database copied
        first; one that cannot be had fails its item)."""
        claims = worklist.claim(self.engine, self.id, worker=self.worker, limit=self.cfg.batch_size)
        local = []
        for claim in claims:
            try:
                local.append(local_file(self.engine, claim, self.cfg.media))
            except MediaMissing as exc:
                reason = str(exc)
                worklist.fail(
                    self.engine, self.id, worker=self.worker, video_id=claim.video_id, reason=reason
                )
        return local

    def renew(self, video_ids: list[int] | None = None) -> None:
        """Keep the rebuild's lease (which covers its items); raises when it was lost."""
        if not rebuilds.renew(self.engine, self.id, worker=self.worker, lease_s=self.cfg.lease_s):
            raise RebuildError(f"rebuild #{self.id} was cancelled or taken over: stopping")

    def begin_swap(self) -> None:
        """Mark the swap begun (a cancel is refused from now on); raises when the rebuild was
        cancelled or taken over: it must not swap."""
        if not rebuilds.begin_swap(self.engine, self.id, worker=self.worker):
            raise RebuildError(f"rebuild #{self.id} was cancelled or taken over: not swapping")

    def progress(self, video_id: int, indexed_s: float, duration_s: float) -> None:
        """A rebuild's progress is its work list's counts, not a row's (the row stays as
        indexed by the published build meanwhile)."""

    def release(self, video_ids: list[int]) -> None:
        worklist.release(self.engine, self.id, worker=self.worker, video_ids=video_ids)

    def pending(self) -> int:
        return rebuilds.get(self.engine, self.id).items["pending"]


class _RebuildWriter(BatchWriter):
    """``BatchWriter`` into the new build, whose bookkeeping is the work list, not the rows."""

    def __init__(self, rebuild: _Rebuild, index: IndexWriter | MilvusWriter) -> None:
        interval = rebuild.cfg.publish_interval_s
        super().__init__(rebuild.engine, index, worker=rebuild.worker, publish_interval_s=interval)
        self.rebuild_id = rebuild.id

    def _fail(self, video_id: int, reason: str) -> bool:
        return worklist.fail(
            self.engine, self.rebuild_id, worker=self.worker, video_id=video_id, reason=reason
        )

    def _complete(self, done: list[Held]) -> list[int]:
        video_ids, segments = [h.video_id for h in done], {h.video_id: h.segments for h in done}
        return worklist.done(
            self.engine, self.rebuild_id, worker=self.worker, video_ids=video_ids, segments=segments
        )


def run_rebuild(
    engine: Engine,
    model: HANet,
    index_dir: Path,
    cfg: IndexingCfg,
    *,
    stop: threading.Event | None = None,
    progress: bool = True,
) -> RebuildSummary:
    """Rebuild the index with ``model`` (a new rebuild, or the running one resumed when its
    holder is gone). Raises RebuildRunning when another live process holds the running one."""
    target = resolve(index_dir)
    start, worker = time.monotonic(), queue.worker_name()
    checkpoint = model.checkpoint_sha256 or "unsaved"
    started = rebuilds.start(
        engine,
        worker=worker,
        checkpoint_sha256=checkpoint,
        factory=cfg.factory,
        lease_s=cfg.lease_s,
    )
    log.info("%s rebuild #%d", "resumed" if started.resumed else "started", started.id)
    staging = staging_dir(index_dir)
    milvus = target if isinstance(target, MilvusTarget) else None
    rebuild = _Rebuild(engine, started.id, worker, checkpoint, cfg, index_dir, staging, milvus)
    try:
        summary = _run(rebuild, started, model, stop or threading.Event(), progress)
    except BaseException:
        rebuilds.stop(engine, rebuild.id, worker=worker)  # resumable at once, not after a lease
        raise
    summary.seconds = time.monotonic() - start
    return summary


def _run(
    rebuild: _Rebuild, started: Started, model: HANet, stop: threading.Event, progress: bool
) -> RebuildSummary:
    summary = RebuildSummary(rebuild.id, started.resumed)
    swapped = started.build is not None and _published(rebuild, started.build)
    if swapped and rebuild.target is None:
        with writing(rebuild.index_dir):  # killed after the swap, before its bookkeeping
            _finish(rebuild)
        return _summarized(rebuild, summary)
    if swapped:  # in Milvus, the catch-up after the swap may be left too
        index = MilvusWriter(rebuild.target, load_current(rebuild.target), pointer="rebuild")
    else:
        index = _open_staging(rebuild, started, model)
    stages = Stages(
        reader_for(model, rebuild.cfg),
        Embedder(model),
        _RebuildWriter(rebuild, index),
    )
    info = rebuilds.get(rebuild.engine, rebuild.id)
    bar = tqdm(
        total=info.total, initial=info.finished_items, unit="video", desc="rebuild",
        disable=not progress,
    )  # fmt: skip
    with stages.reader, contextlib.closing(bar):
        if swapped:
            _settle_milvus(rebuild, stages, bar)
            return _summarized(rebuild, summary)
        work_queue(rebuild, stages, bar, watch=False, stop=stop)
        for _ in range(CATCH_UP_ROUNDS):
            if stop.is_set() or _catch_up(rebuild) <= rebuild.cfg.batch_size:
                break
            bar.total = rebuilds.get(rebuild.engine, rebuild.id).total
            work_queue(rebuild, stages, bar, watch=False, stop=stop)
        if stop.is_set():
            rebuilds.stop(rebuild.engine, rebuild.id, worker=rebuild.worker)
            summary.stopped = True
            return summary
        if rebuild.target is None:
            _swap(rebuild, stages, bar, index)
        else:
            _swap_milvus(rebuild, stages, bar)
    return _summarized(rebuild, summary)


def _published(rebuild: _Rebuild, build: str) -> bool:
    if rebuild.target is not None:
        return milvus_rebuild.published_build(rebuild.target) == build
    return (current_name(rebuild.index_dir) or "").split("/")[0] == build


def _open_staging(rebuild: _Rebuild, started: Started, model: HANet) -> IndexWriter | MilvusWriter:
    """The new build: the one under way when resuming (every item is done again when it was
    lost), else a new one in an emptied staging folder (in Milvus: new collections)."""
    checkpoint, factory = rebuild.checkpoint, rebuild.cfg.factory
    if rebuild.target is not None:
        resume = started.build if started.resumed else None
        index = milvus_rebuild.open_rebuild(rebuild.target, model.cfg, checkpoint, factory, resume)
    else:
        if started.resumed:
            reclaim(rebuild.staging, rebuild.index_dir)
        else:
            shutil.rmtree(rebuild.staging, ignore_errors=True)
        index = IndexWriter.open(rebuild.staging, model.cfg, checkpoint, factory, rebuild.cfg.rows)
    build = index.build.manifest["build"]
    if started.resumed and build != started.build:
        log.warning("rebuild #%d: its build under way was lost, encoding all again", rebuild.id)
        worklist.requeue_all(rebuild.engine, rebuild.id)
    rebuilds.set_build(rebuild.engine, rebuild.id, worker=rebuild.worker, build=build)
    return index


def _catch_up(rebuild: _Rebuild) -> int:
    """Put on the work list what the new build lacks: videos indexed since the list was made,
    and videos of the live build not in the new one (published by a worker that had not yet
    marked their rows). Returns how many."""
    added = worklist.add_indexed(rebuild.engine, rebuild.id)
    live, _ = contents(rebuild.index_dir)
    if rebuild.target is not None:
        staged, _ = milvus_rebuild.staged_contents(rebuild.target)
    else:
        staged, _ = contents(rebuild.staging)
    missing = live - staged - set(worklist.failed_items(rebuild.engine, rebuild.id))
    if missing:
        worklist.requeue(rebuild.engine, rebuild.id, sorted(missing))
    if added or missing:
        log.info("rebuild #%d: %d more videos to encode", rebuild.id, added + len(missing))
    return added + len(missing)


def _swap(rebuild: _Rebuild, stages: Stages, bar: tqdm, index: IndexWriter) -> None:
    """Under the live index's write lock (no publish, no delete meanwhile): the last catch-up,
    the live build's tombstones and those of rows deleted since, then the new build
    published."""
    with writing(rebuild.index_dir):
        rebuild.renew()
        if _catch_up(rebuild):
            bar.total = rebuilds.get(rebuild.engine, rebuild.id).total
            work_queue(rebuild, stages, bar, watch=False, stop=threading.Event())
        rebuild.renew()
        index.publish_empty()  # an empty index still gets a build of this checkpoint
        _, deleted = contents(rebuild.index_dir)
        staged, tombstoned = contents(rebuild.staging)
        gone = deleted | worklist.without_rows(rebuild.engine, staged)
        if gone - tombstoned:
            delete_videos(rebuild.staging, sorted(gone))
        rebuild.begin_swap()
        promote(rebuild.staging, rebuild.index_dir, locked=True)
        log.info("rebuild #%d: swapped in %s", rebuild.id, current_name(rebuild.index_dir))
        _finish(rebuild)


def _swap_milvus(rebuild: _Rebuild, stages: Stages, bar: tqdm) -> None:
    """The last catch-up, the videos whose rows are gone removed from the new build, then the
    swap (one write), then what the replaced build gained meanwhile (``_settle_milvus``)."""
    rebuild.renew()
    if _catch_up(rebuild):
        bar.total = rebuilds.get(rebuild.engine, rebuild.id).total
        work_queue(rebuild, stages, bar, watch=False, stop=threading.Event())
    rebuild.renew()
    staged, _ = milvus_rebuild.staged_contents(rebuild.target)
    gone = worklist.without_rows(rebuild.engine, staged)
    milvus_rebuild.remove_from_rebuild(rebuild.target, sorted(gone))
    rebuild.begin_swap()
    name = milvus_rebuild.swap(rebuild.target)  # tombstones removed from it, then published
    log.info("rebuild #%d: swapped in %s", rebuild.id, name)
    _settle_milvus(rebuild, stages, bar)


def _settle_milvus(rebuild: _Rebuild, stages: Stages, bar: tqdm) -> None:
    """After the swap in Milvus: the videos a worker of the replaced build wrote just before
    it (its pointer check passed before the swap, so they are in the replaced build) encoded
    into the new one, then the bookkeeping, then the replaced build dropped."""
    live, _ = contents(rebuild.index_dir)  # the new build, now published
    missing = milvus_rebuild.retired_contents(rebuild.target) - live
    missing -= set(worklist.failed_items(rebuild.engine, rebuild.id))
    if missing:
        log.info("rebuild #%d: %d videos written just before the swap", rebuild.id, len(missing))
        worklist.requeue(rebuild.engine, rebuild.id, sorted(missing))
        bar.total = rebuilds.get(rebuild.engine, rebuild.id).total
        work_queue(rebuild, stages, bar, watch=False, stop=threading.Event())
    _finish(rebuild)
    milvus_rebuild.drop_retired(rebuild.target)


def _finish(rebuild: _Rebuild) -> None:
    """The bookkeeping of the swap (the caller holds the write lock, so that a cancel cannot
    fall between): the rebuild done, the rows' checkpoint, the rows of the videos it could not
    read failed."""
    if not rebuilds.finish(
        rebuild.engine, rebuild.id, worker=rebuild.worker, checkpoint_sha256=rebuild.checkpoint
    ):
        raise RebuildError(f"rebuild #{rebuild.id} was cancelled or taken over at its end")


def _summarized(rebuild: _Rebuild, summary: RebuildSummary) -> RebuildSummary:
    summary.failed = worklist.failed_items(rebuild.engine, rebuild.id)
    if rebuild.target is not None:
        summary.build = f"{milvus_rebuild.published_build(rebuild.target)}/milvus"
    else:
        summary.build = current_name(rebuild.index_dir)
    summary.indexed = len(contents(rebuild.index_dir)[0])
    return summary
