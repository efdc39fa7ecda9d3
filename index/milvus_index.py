"""Builds in Milvus, the write side and the live reader: what ``index.writer`` and
``index.live`` do with files and a lock, done with collections and one pointer.

A build is a set of collections (``index.milvus``); the meta record "current" names the
published one, and a rebuild publishes by rewriting that one record (an atomic upsert: readers
see the old build or the new one). There is no write lock: writers upsert by deterministic ids
(a video written twice is stored once), and each write is followed by two checks, so a race
ends the way the lock would have ended it:

- tombstones: a video deleted while a worker held it is removed again after the write (the
  delete tombstones first, then removes; the writer writes first, then reads the tombstones);
- the pointer: a worker whose build is no longer the published one raises ``BuildError`` after
  its write and before its rows are marked indexed (the indexer gives its jobs back), the
  checkpoint guard of the file store.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

import numpy as np

from index.milvus import (
    MAX_TOPK,
    STRONG,
    Meta,
    MilvusStore,
    MilvusTarget,
    _query_all,
    insert,
    int_list,
    unit_hits,
)
from index.milvus_build import MilvusBuild, payload_rows
from index.parts import unit_rows
from index.reader import FORMAT, UNITS_FORMAT, BuildError
from index.vectors import SEGMENT_SLOTS, video_of
from model import HANetCfg, VideoEmbeddings

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 0.5
CURRENT, REBUILD = "current", "rebuild"


def _level_vectors(video: VideoEmbeddings, i: int) -> dict[str, np.ndarray]:
    return {
        "event": video.global_[i : i + 1].float().numpy(),
        "action": video.action_segments[i].float().numpy(),
        "entity": video.entity_segments[i].float().numpy(),
    }


def new_manifest(cfg: HANetCfg, checkpoint_sha256: str, factory: str, name: str) -> dict:
    most = max(cfg.num_action_segments, cfg.num_entity_segments)
    if most > SEGMENT_SLOTS:
        raise BuildError(f"the index holds at most {SEGMENT_SLOTS} key segments per unit")
    return {
        "format": FORMAT,
        "units": UNITS_FORMAT,
        "version": 1,
        "build": name,
        "checkpoint_sha256": checkpoint_sha256,
        "config": cfg.to_dict(),
        "factory": factory,
        "dim": cfg.embed_dim,
        "store": "milvus",
    }


def first_build_name(checkpoint_sha256: str) -> str:
    """The name of a checkpoint's first build: the same for every worker that starts at once
    on an empty Milvus, so that they create and publish one build, not several."""
    return f"b{checkpoint_sha256[:16]}_first"


def rebuild_name() -> str:
    return f"b{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"


def open_build(target: MilvusTarget, manifest: dict) -> MilvusBuild:
    """A build's collections (created when missing) as a readable build."""
    store = MilvusStore(target, manifest["build"], manifest["dim"], manifest["factory"])
    build = MilvusBuild(manifest, store)
    build.refresh()
    return build


def load_current(target: MilvusTarget, expect_checkpoint: str | None = None) -> MilvusBuild:
    """The published build; with ``expect_checkpoint``, refuse one of another model."""
    meta = Meta(target)
    current = meta.get(CURRENT)
    if current is None:
        raise BuildError(f"no index build in Milvus ({target.prefix}) yet: run `hanet index run`")
    if expect_checkpoint and current["checkpoint_sha256"] != expect_checkpoint:
        raise BuildError(
            f"the index build was made by checkpoint {current['checkpoint_sha256'][:12]}, not "
            f"the loaded {expect_checkpoint[:12]}: run `hanet index rebuild`"
        )
    return open_build(target, current)


class MilvusWriter:
    """One worker's handle on the index in Milvus (``index.writer.IndexWriter``'s interface:
    ``publish``, ``publish_empty``, ``checkpoint_sha256``)."""

    def __init__(self, target: MilvusTarget, build: MilvusBuild, pointer: str = CURRENT) -> None:
        self.target, self.build, self.pointer = target, build, pointer
        self.meta = Meta(target)

    @classmethod
    def open(
        cls, target: MilvusTarget, cfg: HANetCfg, checkpoint_sha256: str, factory: str
    ) -> MilvusWriter:
        """The published build, or the checkpoint's first one when none is. Raises BuildError
        when the published build belongs to another checkpoint."""
        meta = Meta(target)
        current = meta.get(CURRENT)
        if current is not None:
            return cls(target, load_current(target, expect_checkpoint=checkpoint_sha256))
        manifest = new_manifest(
            cfg, checkpoint_sha256, factory, first_build_name(checkpoint_sha256)
        )
        return cls(target, open_build(target, manifest))

    @property
    def checkpoint_sha256(self) -> str:
        return self.build.checkpoint_sha256

    def _check_pointer(self) -> None:
        """Follow the published build of this checkpoint (a rebuild of the same model swapped
        in), or raise BuildError when it is another checkpoint's."""
        if self.pointer != CURRENT:
            return
        current = self.meta.get(CURRENT)
        if current is None or current["build"] == self.build.manifest["build"]:
            return
        if current["checkpoint_sha256"] != self.checkpoint_sha256:
            raise BuildError(
                f"the published build is checkpoint {current['checkpoint_sha256'][:12]}'s, not "
                f"this worker's {self.checkpoint_sha256[:12]}"
            )
        self.build = open_build(self.target, current)

    def publish(
        self,
        video_ids: list[int],
        video: VideoEmbeddings,
        frame_times: np.ndarray,
        spans: np.ndarray | None = None,
    ) -> list[int]:
        """Write these videos (rows as ``IndexWriter.publish`` takes them) into the build:
        payloads first, then the level vectors (a vector found always has its payload), then
        the tombstone and pointer checks. Returns the videos written, once each (not those
        deleted meanwhile). When it returns, Milvus has acknowledged every write."""
        self._check_pointer()
        units, spans = unit_rows(video_ids, video, frame_times, spans)
        videos = video_of(units)
        wanted = list(dict.fromkeys(videos.tolist()))
        gone = self.meta.tombstoned(wanted)
        keep = [i for i, v in enumerate(videos.tolist()) if v not in gone]
        if keep:
            units, videos = units[keep], videos[keep]
            video, frame_times, spans = video.select(keep), frame_times[keep], spans[keep]
            self._write(units, videos, video, frame_times, spans)
        late = self.meta.tombstoned(set(wanted) - gone)  # deleted while being written
        if late:
            self.build.vectors.remove(sorted(late))
        self.build.vectors.flush()  # persisted before the rows are marked indexed
        self.publish_empty()
        self._check_pointer_after()
        return [v for v in wanted if v not in gone and v not in late]

    def _write(self, units, videos, video, frame_times, spans) -> None:
        store = self.build.vectors
        insert(
            store.client, store.collection("rows"), payload_rows(units, video, frame_times, spans)
        )
        by_video: dict[int, list[dict[str, np.ndarray]]] = {}
        for i, v in enumerate(videos.tolist()):
            by_video.setdefault(v, []).append(_level_vectors(video, i))
        store.add_many(by_video)
        self.build._most = max(self.build._most, *map(len, by_video.values()))

    def _check_pointer_after(self) -> None:
        """After a write: raise BuildError when the build written is no longer the published
        one (its rows must not be marked indexed: a rebuild swapped in meanwhile)."""
        if self.pointer != CURRENT:
            return
        current = self.meta.get(CURRENT)
        if current is not None and current["build"] != self.build.manifest["build"]:
            raise BuildError("a rebuild swapped in another build during this write")

    def publish_empty(self) -> None:
        """Publish this build when nothing is published yet (every worker that starts on an
        empty Milvus publishes the same first build: the same record)."""
        if self.pointer == CURRENT and self.meta.get(CURRENT) is None:
            self.meta.put(CURRENT, self.build.manifest)


def start_build(
    target: MilvusTarget, cfg: HANetCfg, checkpoint_sha256: str, factory: str
) -> MilvusWriter:
    """A new build beside the published one (a rebuild's: its own collections), recorded as
    "rebuild" so that deletes reach it too; its writer publishes nothing until ``promote``."""
    meta = Meta(target)
    manifest = new_manifest(cfg, checkpoint_sha256, factory, rebuild_name())
    writer = MilvusWriter(target, open_build(target, manifest), pointer=REBUILD)
    meta.put(REBUILD, manifest)
    return writer


def promote(target: MilvusTarget, drop_old: bool = False) -> str:
    """Publish the rebuild's build: the tombstones removed from it once more (deletes made
    while it was written), then one upsert of "current" (readers switch at their next look;
    writers of the old build raise BuildError after their next write). ``drop_old``: drop the
    previous build's collections (readers still on it fail until they look again)."""
    meta = Meta(target)
    manifest, old = meta.get(REBUILD), meta.get(CURRENT)
    if manifest is None:
        raise BuildError("no rebuild's build to publish")
    store = open_build(target, manifest).vectors
    staged = contents(target, REBUILD)[0]
    gone = sorted(meta.all_tombstones())
    if gone:
        store.remove(gone)
    store.flush()
    meta.put(CURRENT, {**manifest, "version": (old or {}).get("version", 0) + 1})
    meta.drop(REBUILD)
    if drop_old and old is not None and old["build"] != manifest["build"]:
        open_build(target, old).vectors.drop()
    log.info("published build %s (%d videos)", manifest["build"], len(staged))
    return f"{manifest['build']}/milvus"


def delete_videos(target: MilvusTarget, video_ids: list[int]) -> str:
    """Tombstone videos and remove them from the published build and from a rebuild's build
    under way; returns the published build's name. Raises BuildError when none is."""
    meta = Meta(target)
    ids = sorted({int(v) for v in video_ids})
    meta.tombstone(ids)
    current = meta.get(CURRENT)
    for pointer in (CURRENT, REBUILD):
        manifest = current if pointer == CURRENT else meta.get(REBUILD)
        if manifest is not None and ids:
            store = open_build(target, manifest).vectors
            store.remove(ids)
            store.flush()
    if current is None:
        raise BuildError(f"no index build in Milvus ({target.prefix}) yet")
    return f"{current['build']}/milvus"


def contents(target: MilvusTarget, pointer: str = CURRENT) -> tuple[set[int], set[int]]:
    """A build's live videos and the tombstones (empty sets when there is no such build)."""
    meta = Meta(target)
    manifest = meta.get(pointer)
    if manifest is None:
        return set(), set()
    store = open_build(target, manifest).vectors
    rows = _query_all(store.client, store.collection("rows"), "chunk == 0", ["video"])
    deleted = meta.all_tombstones()
    return {int(r["video"]) for r in rows} - deleted, deleted


def compact(target: MilvusTarget) -> MilvusBuild:
    """Ask Milvus to compact the published build's collections (it drops deleted rows)."""
    build = load_current(target)
    for level in ("event", "action", "entity", "rows"):
        with contextlib.suppress(Exception):  # Milvus Lite compacts on its own
            build.client.compact(build.vectors.collection(level))
    return build


def stored_units(build: MilvusBuild) -> set[int]:
    """Every unit with a payload in a build (tests and checks)."""
    rows = _query_all(build.client, build.rows_name, "chunk == 0", ["unit"])
    return {int(r["unit"]) for r in rows}


class MilvusLive:
    """The published build for the API (``index.live.LiveIndex``'s interface): the pointer
    is read again every WATCH_INTERVAL_S; new videos and deletes need no reload at all."""

    def __init__(self, target: MilvusTarget, expect_checkpoint: str | None) -> None:
        self.target, self.expect_checkpoint = target, expect_checkpoint
        self._build: MilvusBuild | None = None
        self._error: BuildError | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()
        self.warming = False

    @property
    def loaded(self) -> MilvusBuild | None:
        return self._build

    def current(self, wait: bool = False) -> MilvusBuild | None:
        """The published build (None before the first publish); raises BuildError when it
        cannot serve this model."""
        with self._lock:
            stale = time.monotonic() - self._read_at >= WATCH_INTERVAL_S
            if wait or stale or self._build is None:  # none yet: one cheap read per call
                self._refresh()
            if self._error is not None:
                raise self._error
            return self._build

    def _refresh(self) -> None:
        self._read_at = time.monotonic()
        current = Meta(self.target).get(CURRENT)
        if current is None:
            self._build, self._error = None, None
            return
        if self._build is not None and self._build.manifest["build"] == current["build"]:
            self._build.refresh()
            return
        try:
            self._build = load_current(self.target, self.expect_checkpoint)
            self._error = None
        except BuildError as exc:
            log.error("cannot use the published index build: %s", exc)
            self._build, self._error = None, exc

    def watch(self, stop: threading.Event) -> threading.Thread:
        """Read the pointer in the background, so that searches rarely do."""

        def loop() -> None:
            while not stop.wait(WATCH_INTERVAL_S):
                with contextlib.suppress(Exception):
                    self.current(wait=True)

        thread = threading.Thread(target=loop, name="hanet-milvus-watcher", daemon=True)
        thread.start()
        return thread


def top_units_among(
    store: MilvusStore, level: str, queries: np.ndarray, k: int, videos: np.ndarray
) -> list[tuple]:
    """``MilvusStore.top_units`` among ``videos`` only (a filtered search): the filter
    expression ``video in [...]`` is applied by Milvus before the top ``k`` are taken, so the
    list is as long as those videos allow. Per query: unit ids, scores, key segment indexes."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if len(videos) == 0:
        empty = np.zeros(0, np.int64)
        return [(empty, np.zeros(0, np.float32), empty) for _ in q]
    params: dict = {"metric_type": "IP"}
    if store.index_type == "HNSW":
        params["params"] = {"ef": max(store.ef_search, min(k, MAX_TOPK))}
    kwargs = {} if level == "event" else {"group_by_field": "unit"}
    result = store.client.search(
        store.collection(level),
        data=list(q),
        limit=max(1, min(k, MAX_TOPK)),
        filter=f"video in {int_list(np.asarray(videos).tolist())}",
        search_params=params,
        consistency_level=STRONG,
        **kwargs,
    )
    return unit_hits(result)
