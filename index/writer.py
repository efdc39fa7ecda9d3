"""The write side of index builds: new builds, publishing versions (one writer at a time per
index directory, each on top of the latest version), tombstones, compaction, promotion."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from index.milvus import MilvusTarget, resolve
from index.parts import add_part, link_parts, live_rows, no_rows, stored_videos, unit_rows
from index.reader import (
    FORMAT,
    UNITS_FORMAT,
    Build,
    BuildError,
    current_name,
    file_id,
    load_current,
    read_manifest,
    without_videos,
)
from index.rows import DEFAULT_ROW_FORMAT, check_format
from index.vectors import (
    INDEX_FILES,
    SEGMENT_SLOTS,
    FaissStore,
    read_meta,
    video_of,
    write_meta,
)
from model import HANetCfg, VideoEmbeddings


class IndexWriter:
    """One indexer worker's handle on the index: the build it publishes into (the current one
    when it belongs to this checkpoint, else a new one when none is published yet)."""

    def __init__(self, index_dir: Path, build: Build) -> None:
        self.index_dir, self.build = index_dir, build

    @classmethod
    def open(
        cls,
        index_dir: Path,
        cfg: HANetCfg,
        checkpoint_sha256: str,
        factory: str,
        rows: str = DEFAULT_ROW_FORMAT,
    ) -> IndexWriter:
        """Raises BuildError when the published build belongs to another checkpoint. ``rows``:
        the rerank row format of a new build (``index.rows``; a published build keeps its
        own). An index folder registered as served by Milvus (``index.milvus.use_milvus``)
        gives a ``MilvusWriter``, the same interface."""
        target = resolve(index_dir)
        if isinstance(target, MilvusTarget):
            from index.milvus_index import MilvusWriter

            return MilvusWriter.open(target, cfg, checkpoint_sha256, factory)  # type: ignore[return-value]
        try:
            return cls(index_dir, load_current(index_dir, expect_checkpoint=checkpoint_sha256))
        except BuildError:
            if (index_dir / "CURRENT").exists():
                raise
            return cls(index_dir, new_build(index_dir, cfg, checkpoint_sha256, factory, rows))

    @property
    def checkpoint_sha256(self) -> str:
        return self.build.checkpoint_sha256

    def publish(
        self,
        video_ids: list[int],
        video: VideoEmbeddings,
        frame_times: np.ndarray,
        spans: np.ndarray | None = None,
    ) -> list[int]:
        """Add these videos and publish the next version, on top of the latest one. Row i is a
        unit of video ``video_ids[i]``: a video's units are consecutive rows, in segment order,
        all of them in this call (``unit_rows``). Returns the videos added, once each: those not
        tombstoned in the latest version (``publish`` skips those)."""
        units, spans = unit_rows(video_ids, video, frame_times, spans)
        self.build = publish_latest(self.index_dir, self.build, units, video, frame_times, spans)
        deleted = self.build.vectors.deleted  # the latest version's, as the publish saw them
        return [v for v in dict.fromkeys(video_ids) if v not in deleted]

    def publish_empty(self) -> None:
        """Publish a first version without videos, when nothing is published yet (a rebuild
        of an empty index still makes a build of its checkpoint)."""
        if current_name(self.index_dir) is None:
            times, spans = np.zeros((0, 1), np.float32), np.zeros((0, 2), np.float32)
            units = np.zeros(0, np.int64)
            self.build = publish_latest(self.index_dir, self.build, units, no_rows(), times, spans)


def new_build(
    index_dir: Path,
    cfg: HANetCfg,
    checkpoint_sha256: str,
    factory: str,
    rows: str = DEFAULT_ROW_FORMAT,
) -> Build:
    """An empty build (not yet published) for a checkpoint; its parts are written in the
    rerank row format ``rows`` (``index.rows``; manifest "rows", float16 when absent)."""
    most = max(cfg.num_action_segments, cfg.num_entity_segments)
    if most > SEGMENT_SLOTS:
        raise BuildError(
            f"the index holds at most {SEGMENT_SLOTS} key segments per unit, not {most}"
        )
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    manifest = {
        "format": FORMAT,
        "units": UNITS_FORMAT,
        "version": 0,
        "build": name,
        "checkpoint_sha256": checkpoint_sha256,
        "config": cfg.to_dict(),
        "factory": factory,
        "rows": check_format(rows),
        "parts": [],
        "videos": 0,
    }
    return Build(index_dir / "builds" / name / "v0", manifest, FaissStore(cfg.embed_dim, factory))


def level_vectors(video: VideoEmbeddings, i: int) -> dict[str, np.ndarray]:
    return {
        "event": video.global_[i : i + 1].float().numpy(),
        "action": video.action_segments[i].float().numpy(),
        "entity": video.entity_segments[i].float().numpy(),
    }


@contextlib.contextmanager
def writing(index_dir: Path) -> Iterator[None]:
    """One writer at a time per index directory, across processes and hosts that share it
    (indexer workers, deletes from the API, compaction, promotion): an exclusive lock on
    ``index/.write-lock``, held while a version is prepared and published."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".write-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_current(index_dir: Path, build: Build) -> bool:
    name = current_name(index_dir)
    if name is None:
        return build.manifest["version"] == 0  # nothing published yet, by anyone
    return name == build.name


def publish_latest(
    index_dir: Path,
    build: Build,
    units: np.ndarray,
    video: VideoEmbeddings,
    frame_times: np.ndarray,
    spans: np.ndarray,
) -> Build:
    """``publish`` for one of several writers: under the write lock, on top of the latest
    published version (caught up when another writer published since ``build`` was read), so
    no writer drops another's videos or tombstones, and videos deleted meanwhile (tombstoned in
    the latest version) are not added."""
    with writing(index_dir):
        if not _is_current(index_dir, build):
            build = _catch_up(index_dir, build)
        return publish(index_dir, build, units, video, frame_times, spans)


def _catch_up(index_dir: Path, build: Build) -> Build:
    """The latest version, for a writer whose ``build`` is behind (the caller holds the write
    lock). When only deletes were published since, the FAISS files are still the ones in
    memory: ``build`` takes their tombstones. Otherwise the latest version is read afresh."""
    name = current_name(index_dir)
    if name is None or not name.startswith(f"{build.manifest['build']}/"):
        return load_current(index_dir, expect_checkpoint=build.checkpoint_sha256)
    root = index_dir / "builds" / name
    faiss_files = [f"vectors/{f}" for f in INDEX_FILES]
    known = [build.file_ids.get(path) for path in faiss_files]
    if None in known or known != [file_id(root / path) for path in faiss_files]:
        return load_current(index_dir, expect_checkpoint=build.checkpoint_sha256)
    manifest = read_manifest(root)
    deleted = set(read_meta(root / "vectors").get("deleted", []))
    build.vectors = build.vectors.with_deleted(deleted)
    build.rows = without_videos(build.rows, deleted)
    build.root, build.manifest = root, manifest
    return build


def publish(
    index_dir: Path,
    build: Build,
    units: np.ndarray,
    video: VideoEmbeddings,
    frame_times: np.ndarray,
    spans: np.ndarray,
    add_vectors: bool = True,
    stored: dict[str, np.ndarray] | None = None,
) -> Build:
    """Add units (of whole videos, consecutive per video; their embeddings, frame times (N, T)
    and spans (N, 2)) and publish the next version. Tombstoned videos (deleted, possibly before
    they were ever published) are skipped: a delete always wins over a worker that still held
    the video. ``add_vectors`` False writes rerank rows only (compaction: the vectors are
    there); ``stored``, the units' rows already in a row format (``Build.stored``), are written
    as they are rather than coded from ``video`` (compaction)."""
    units = np.asarray(units, dtype=np.int64)
    videos = video_of(units)
    if add_vectors and build.vectors.deleted.intersection(videos.tolist()):
        keep = [i for i, v in enumerate(videos.tolist()) if v not in build.vectors.deleted]
        units, videos, video = units[keep], videos[keep], video.select(keep)
        frame_times, spans = frame_times[keep], spans[keep]
        if not len(units):
            return build  # nothing left to add: no new version
    if add_vectors:
        _add_vectors(build, videos, video)
    builds_dir = build.root.parent
    version = build.manifest["version"] + 1
    tmp = builds_dir / f".v{version}.{uuid.uuid4().hex[:6]}.tmp"
    tmp.mkdir(parents=True)
    link_parts(build.root, tmp, build.manifest["parts"])  # earlier parts: hard links
    manifest = dict(build.manifest)
    if len(units):
        part, fmt = f"{version:06d}", build.manifest.get("rows", "float16")
        add_part(tmp, part, units, video, frame_times, spans, fmt, stored)
        manifest["parts"] = [*manifest["parts"], part]
    build.vectors.save(tmp / "vectors")
    live = build.vectors.videos - build.vectors.deleted
    counts = {lv: build.vectors.count(lv) for lv in build.vectors.indexes}
    manifest.update(version=version, videos=len(live), counts=counts)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    final = builds_dir / f"v{version}"
    os.replace(tmp, final)
    previous, build.root, build.manifest = build.root.name, final, manifest
    # the FAISS files now match the store in memory (its rows and parts are not re-read)
    build.file_ids = {f"vectors/{f}": file_id(final / "vectors" / f) for f in INDEX_FILES}
    _point_current(index_dir, build.name)
    _drop_old_versions(builds_dir, keep={final.name, previous})
    return build


def _add_vectors(build: Build, videos: np.ndarray, video: VideoEmbeddings) -> None:
    """Each video's units' level vectors into the build's store (replacing any it had; the
    part being written replaces its rows, ``index.reader._rows``)."""
    if not len(videos):  # an empty first version (a rebuild of an empty library)
        return
    starts = np.flatnonzero(np.r_[True, videos[1:] != videos[:-1]])
    ends = [*starts[1:], len(videos)]
    for start, end in zip(starts, ends, strict=True):
        video_id = int(videos[start])
        build.vectors.add(video_id, [level_vectors(video, i) for i in range(start, end)])


def _point_current(index_dir: Path, name: str) -> None:
    tmp = index_dir / f".CURRENT.{uuid.uuid4().hex[:6]}"
    tmp.write_text(name + "\n")
    os.replace(tmp, index_dir / "CURRENT")


def _drop_old_versions(builds_dir: Path, keep: set[str]) -> None:
    """Readers of an older version keep their open files (mmap); the names can go."""
    versions = sorted(
        (p for p in builds_dir.glob("v*") if p.is_dir()), key=lambda p: int(p.name[1:])
    )
    for old in versions[:-2]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def promote(staging: Path, index_dir: Path, *, locked: bool = False) -> None:
    """Make a build prepared under ``staging`` (a rebuild) the published one: its folder moves
    into ``index_dir/builds``, then CURRENT points at it (one rename: readers see the old
    build or the new one). ``locked``: the caller holds ``writing(index_dir)`` already."""
    name = (staging / "CURRENT").read_text().strip()
    build_name = name.split("/")[0]
    with contextlib.nullcontext() if locked else writing(index_dir):
        (index_dir / "builds").mkdir(parents=True, exist_ok=True)
        os.replace(staging / "builds" / build_name, index_dir / "builds" / build_name)
        _point_current(index_dir, name)
    shutil.rmtree(staging, ignore_errors=True)


def reclaim(staging: Path, index_dir: Path) -> None:
    """Undo a ``promote`` killed between moving the build and pointing CURRENT at it: the
    build goes back under ``staging`` (nothing published it), so it can be resumed."""
    name = current_name(staging)
    if name is None:
        return
    build_name = name.split("/")[0]
    moved = index_dir / "builds" / build_name
    if not (staging / "builds" / build_name).exists() and moved.exists():
        with writing(index_dir):
            if (current_name(index_dir) or "").split("/")[0] != build_name:
                os.replace(moved, staging / "builds" / build_name)


def contents(index_dir: Path) -> tuple[set[int], set[int]]:
    """The published version's live videos and its tombstones, from its id lists alone (no
    FAISS index read); empty sets when nothing is published."""
    target = resolve(index_dir)
    if isinstance(target, MilvusTarget):
        from index.milvus_index import contents as milvus_contents

        return milvus_contents(target)
    name = current_name(index_dir)
    if name is None:
        return set(), set()
    root = index_dir / "builds" / name
    deleted = set(read_meta(root / "vectors").get("deleted", []))
    stored = set(stored_videos(root, read_manifest(root)["parts"]).tolist())
    return stored - deleted, deleted


def delete_videos(index_dir: Path, video_ids: list[int]) -> str:
    """Tombstone videos in the published build, every one given, in the build or not: those in
    it are gone from every search of the new version at once (their vectors and rows leave the
    files at ``compact``); those not yet in it (still with a worker) are never published. A
    small write: the new version links the current one's FAISS files and rerank parts and lists
    the videos as deleted; no FAISS index is read or written. Returns the published version's
    name ("<build>/v<n>"; the current one when every video was tombstoned already). Raises
    BuildError before any publish. In Milvus (``index.milvus.resolve``): tombstoned and
    removed there (``index.milvus_index.delete_videos``)."""
    target = resolve(index_dir)
    if isinstance(target, MilvusTarget):
        from index.milvus_index import delete_videos as delete_in_milvus

        return delete_in_milvus(target, video_ids)
    with writing(index_dir):
        name = current_name(index_dir)
        if name is None:
            raise BuildError(f"no index build in {index_dir} yet")
        root = index_dir / "builds" / name
        manifest, meta = read_manifest(root), read_meta(root / "vectors")
        deleted = set(meta.get("deleted", []))
        new = set(map(int, video_ids)) - deleted
        if not new:
            return name
        stored = stored_videos(root, manifest["parts"])
        live_gone = set(stored[np.isin(stored, list(new))].tolist())
        meta["deleted"] = sorted(deleted | new)
        return _publish_tombstones(index_dir, root, manifest, meta, len(live_gone))


def _publish_tombstones(index_dir: Path, root: Path, manifest: dict, meta: dict, gone: int) -> str:
    """Publish the version after ``root`` with the same files, hard-linked, and ``meta``'s
    tombstones (``gone`` more videos than ``root`` has)."""
    builds_dir = root.parent
    version = manifest["version"] + 1
    tmp = builds_dir / f".v{version}.{uuid.uuid4().hex[:6]}.tmp"
    (tmp / "vectors").mkdir(parents=True)
    for f in INDEX_FILES:
        os.link(root / "vectors" / f, tmp / "vectors" / f)
    write_meta(tmp / "vectors", meta)
    link_parts(root, tmp, manifest["parts"])
    manifest = {**manifest, "version": version, "videos": manifest.get("videos", 0) - gone}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    final = builds_dir / f"v{version}"
    os.replace(tmp, final)
    name = f"{manifest['build']}/{final.name}"
    _point_current(index_dir, name)
    _drop_old_versions(builds_dir, keep={final.name, root.name})
    return name


def compact(index_dir: Path) -> Build:
    """Rewrite the published build without deleted videos: FAISS indexes without their
    vectors, and the rerank rows merged into one part (newest row per video). Every tombstone
    is kept, those whose vectors were removed included: a worker may still hold a deleted
    video (claimed before its delete) and must not publish it afterwards, and ids are never
    reused, so a tombstone is never wrong; they are a list of ids in ``vectors.json``, and the
    search selector covers only the ones with vectors."""
    with writing(index_dir):
        build = load_current(index_dir)
        build.vectors.compact()
        units, video, times, spans, stored = live_rows(build)
        build.manifest = {**build.manifest, "parts": []}
        return publish(index_dir, build, units, video, times, spans, False, stored)
