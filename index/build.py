"""Index builds on disk: the level vectors (FAISS) and the rerank store, published atomically.

    index/CURRENT                      "<build>/<version>", replaced atomically
    index/builds/<build>/<version>/    one immutable version of a build:
        manifest.json                  checkpoint hash and config, factory, parts, counts
        vectors/                       FAISS indexes per level (+ tombstones)
        parts/<n>/<field>.npy          rerank rows (float16, memory-mapped by readers), linked
                                       from earlier versions, never rewritten
        parts/<n>/gram_<units>.npy     their units' Gram matrices (float32; parts written
                                       before these existed have none, and still work)

A writer prepares the next version in a temporary folder, renames it into place and then
replaces CURRENT, so a reader sees the old version or the new one, never half of one. Writers
(several indexer workers, deletes, compaction) take ``index/.write-lock`` and build on the
latest version, so none drops another's videos or tombstones. A video
re-indexed later appears in a newer part; the newest row wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from index.vectors import FaissStore
from model import HANetCfg, VideoEmbeddings
from model.scores import UNIT_FIELDS, unit_grams

FORMAT = "hanet-index-build"
FIELDS = (
    "global_",
    "action_frames",
    "entity_frames",
    "frame_mask",
    "action_segments",
    "action_spans",
    "entity_segments",
    "verb_probs",
    "noun_probs",
)
# The embedding vectors, handed to the scores in float16 as stored (model.scores multiplies
# them as they are: a float32 copy would be written, then read again, on every rerank).
HALF_FIELDS = ("global_", "action_frames", "entity_frames", "action_segments", "entity_segments")
# Per unit field (model.scores.UNIT_FIELDS), the Gram matrices of its stored rows: with them a
# rerank reads each unit vector once (on the 2-core AMD VM, 100,000 videos, 200 candidates:
# gather and score 10.9 -> 6.3 ms, one run each).
GRAM_FILES = {name: f"gram_{name}" for name in UNIT_FIELDS}
GRAM_CHUNK = 4096  # videos whose Gram matrices are computed at once (compaction writes all)


class BuildError(Exception):
    """No usable build, or one made by another model than the one asked for."""


@dataclass
class Build:
    """One published version: its vectors, and its rerank rows memory-mapped."""

    root: Path
    manifest: dict
    vectors: FaissStore
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)  # video -> (part, row)

    @property
    def checkpoint_sha256(self) -> str:
        return self.manifest["checkpoint_sha256"]

    @property
    def name(self) -> str:
        """The published version's name as CURRENT holds it: "<build>/v<version>"."""
        return f"{self.manifest['build']}/v{self.manifest['version']}"

    def embeddings(self, video_ids: list[int]) -> VideoEmbeddings:
        """The stored VideoEmbeddings of these videos, in this order: the embedding vectors
        (HALF_FIELDS) in float16, the concept probabilities in float32."""
        return self._embeddings_at(self._where(video_ids))

    def rerank_rows(
        self, video_ids: list[int]
    ) -> tuple[VideoEmbeddings, dict[str, torch.Tensor] | None]:
        """``embeddings`` and ``grams`` of these videos at once (a search's rerank)."""
        where = self._where(video_ids)
        return self._embeddings_at(where), self._grams_at(where)

    def _embeddings_at(self, where: np.ndarray) -> VideoEmbeddings:
        values = {}
        for name in FIELDS:
            tensor = torch.from_numpy(self._gather(name, where))
            half = name in HALF_FIELDS or not tensor.is_floating_point()
            values[name] = tensor if half else tensor.float()
        return VideoEmbeddings(**values)

    def grams(self, video_ids: list[int]) -> dict[str, torch.Tensor] | None:
        """The stored Gram matrices of these videos' units (``model.scores.unit_grams``), in
        this order; None when a part holding one of them has none (written before they were)."""
        return self._grams_at(self._where(video_ids))

    def _grams_at(self, where: np.ndarray) -> dict[str, torch.Tensor] | None:
        used = set(where[:, 0].tolist()) or set(range(len(self.parts)))
        if not used or any(f not in self.parts[p] for p in used for f in GRAM_FILES.values()):
            return None
        return {
            name: torch.from_numpy(self._gather(file, where)) for name, file in GRAM_FILES.items()
        }

    def _where(self, video_ids: list[int]) -> np.ndarray:
        missing = [v for v in video_ids if v not in self.rows]
        if missing:
            raise BuildError(f"videos not in this build: {missing[:5]}")
        return np.array([self.rows[v] for v in video_ids], dtype=np.int64).reshape(-1, 2)

    def _gather(self, name: str, where: np.ndarray) -> np.ndarray:
        """Rows of one stored array at (part, row) pairs: one gather per part, not per row."""
        parts = np.unique(where[:, 0]).tolist()
        if len(parts) == 1:  # the usual case (one part after compaction): no second copy
            return np.asarray(self.parts[parts[0]][name][where[:, 1]])
        first = next(part[name] for part in self.parts if name in part)
        out = np.empty((len(where), *first.shape[1:]), dtype=first.dtype)
        for part in parts:
            chosen = where[:, 0] == part
            out[chosen] = self.parts[part][name][where[chosen, 1]]
        return out

    def frame_times(self, video_id: int) -> np.ndarray:
        part, row = self.rows[video_id]
        return self.parts[part]["frame_times"][row]


def warm(build: Build) -> int:
    """Touch every page of the build's memory-mapped rerank rows once, so that searches find
    them in memory (page cache and this process's page tables) rather than faulting on each
    candidate. Nothing is touched when the rows would not fit in half the available memory.
    Returns the bytes touched."""
    build.vectors.tombstone_selector()  # built once here rather than by the first search
    arrays = [a for part in build.parts for a in part.values()]
    total = sum(a.nbytes for a in arrays)
    if total > _available_memory() // 2:
        return 0
    page = mmap.PAGESIZE
    for array in arrays:
        flat = array.reshape(-1).view(np.uint8)
        if flat.size:
            int(flat[::page].max())  # one byte per page
    return total


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _current_file(index_dir: Path) -> Path:
    return index_dir / "CURRENT"


def load_current(index_dir: Path, expect_checkpoint: str | None = None) -> Build:
    """The published build; with ``expect_checkpoint``, refuse a build of another model."""
    try:
        name = _current_file(index_dir).read_text().strip()
    except FileNotFoundError:
        raise BuildError(f"no index build in {index_dir} yet: run `hanet index run`") from None
    root = index_dir / "builds" / name
    manifest = json.loads((root / "manifest.json").read_text())
    if expect_checkpoint and manifest["checkpoint_sha256"] != expect_checkpoint:
        raise BuildError(
            f"the index build was made by checkpoint {manifest['checkpoint_sha256'][:12]}, not "
            f"the loaded {expect_checkpoint[:12]}: run `hanet index rebuild`"
        )
    build = Build(root, manifest, FaissStore.load(root / "vectors"))
    for n, part in enumerate(manifest["parts"]):
        folder = root / "parts" / part
        names = [
            *FIELDS,
            "frame_times",
            *(f for f in GRAM_FILES.values() if (folder / f"{f}.npy").exists()),
        ]
        arrays = {f: np.load(folder / f"{f}.npy", mmap_mode="r") for f in names}
        build.parts.append(arrays)
        for row, video_id in enumerate(np.load(folder / "video_ids.npy").tolist()):
            build.rows[video_id] = (n, row)
    for video_id in build.vectors.deleted:
        build.rows.pop(video_id, None)
    return build


def new_build(index_dir: Path, cfg: HANetCfg, checkpoint_sha256: str, factory: str) -> Build:
    """An empty build (not yet published) for a checkpoint."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    manifest = {
        "format": FORMAT,
        "version": 0,
        "build": name,
        "checkpoint_sha256": checkpoint_sha256,
        "config": cfg.to_dict(),
        "factory": factory,
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
    try:
        name = _current_file(index_dir).read_text().strip()
    except FileNotFoundError:
        return build.manifest["version"] == 0  # nothing published yet, by anyone
    return name == build.name


def publish_latest(
    index_dir: Path,
    build: Build,
    video_ids: list[int],
    video: VideoEmbeddings,
    frame_times: np.ndarray,
) -> Build:
    """``publish`` for one of several writers: under the write lock, on top of the latest
    published version (re-read when another writer published since ``build`` was read), so no
    writer drops another's videos or tombstones."""
    with writing(index_dir):
        if not _is_current(index_dir, build):
            build = load_current(index_dir, expect_checkpoint=build.checkpoint_sha256)
        return publish(index_dir, build, video_ids, video, frame_times)


def publish(
    index_dir: Path,
    build: Build,
    video_ids: list[int],
    video: VideoEmbeddings,
    frame_times: np.ndarray,
    add_vectors: bool = True,
) -> Build:
    """Add videos (their embeddings and frame times (N, T)) and publish the next version.
    ``add_vectors`` False writes rerank rows only (compaction: the vectors are there)."""
    for i, video_id in enumerate(video_ids if add_vectors else []):
        build.vectors.add(video_id, level_vectors(video, i))
    builds_dir = build.root.parent
    version = build.manifest["version"] + 1
    tmp = builds_dir / f".v{version}.{uuid.uuid4().hex[:6]}.tmp"
    tmp.mkdir(parents=True)
    for part in build.manifest["parts"]:  # earlier parts: hard links, not copies
        _link_tree(build.root / "parts" / part, tmp / "parts" / part)
    manifest = dict(build.manifest)
    if video_ids:
        part = f"{version:06d}"
        folder = tmp / "parts" / part
        folder.mkdir(parents=True)
        rows = {}
        for name in FIELDS:  # float rows in float16: half the disk and page cache to rerank
            array = getattr(video, name).detach().cpu().numpy()
            rows[name] = array.astype(np.float16) if array.dtype.kind == "f" else array
            np.save(folder / f"{name}.npy", rows[name])
        stored = VideoEmbeddings(**{name: torch.from_numpy(a) for name, a in rows.items()})
        # of the rows as stored, a bounded float32 copy at a time
        chunks = [
            unit_grams(stored.select(slice(i, i + GRAM_CHUNK)))
            for i in range(0, len(video_ids), GRAM_CHUNK)
        ]
        for name, file in GRAM_FILES.items():
            np.save(folder / f"{file}.npy", torch.cat([c[name] for c in chunks]).numpy())
        np.save(folder / "frame_times.npy", frame_times.astype(np.float32))
        np.save(folder / "video_ids.npy", np.asarray(video_ids, dtype=np.int64))
        manifest["parts"] = [*manifest["parts"], part]
    build.vectors.save(tmp / "vectors")
    live = build.vectors.videos - build.vectors.deleted
    counts = {lv: build.vectors.count(lv) for lv in build.vectors.indexes}
    manifest.update(version=version, videos=len(live), counts=counts)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    final = builds_dir / f"v{version}"
    os.replace(tmp, final)
    previous, build.root, build.manifest = build.root.name, final, manifest
    _point_current(index_dir, build.name)
    _drop_old_versions(builds_dir, keep={final.name, previous})
    return build


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        os.link(f, dst / f.name)


def _point_current(index_dir: Path, name: str) -> None:
    tmp = index_dir / f".CURRENT.{uuid.uuid4().hex[:6]}"
    tmp.write_text(name + "\n")
    os.replace(tmp, _current_file(index_dir))


def _drop_old_versions(builds_dir: Path, keep: set[str]) -> None:
    """Readers of an older version keep their open files (mmap); the names can go."""
    versions = sorted(
        (p for p in builds_dir.glob("v*") if p.is_dir()), key=lambda p: int(p.name[1:])
    )
    for old in versions[:-2]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def promote(staging: Path, index_dir: Path) -> None:
    """Make a build prepared under ``staging`` (a rebuild) the published one."""
    name = _current_file(staging).read_text().strip()
    build_name = name.split("/")[0]
    with writing(index_dir):
        (index_dir / "builds").mkdir(parents=True, exist_ok=True)
        os.replace(staging / "builds" / build_name, index_dir / "builds" / build_name)
        _point_current(index_dir, name)
    shutil.rmtree(staging, ignore_errors=True)


def delete_videos(index_dir: Path, video_ids: list[int]) -> Build:
    """Tombstone videos in the published build: gone from every search of the new version at
    once; their vectors and rows leave the files at ``compact``."""
    with writing(index_dir):
        build = load_current(index_dir)
        build.vectors.delete(video_ids)
        return publish(index_dir, build, [], _empty_like(build), np.zeros((0, 1), np.float32))


def compact(index_dir: Path) -> Build:
    """Rewrite the published build without deleted videos: FAISS indexes without their
    vectors, and the rerank rows merged into one part (newest row per video)."""
    with writing(index_dir):
        build = load_current(index_dir)
        build.vectors.compact()
        live = sorted(build.rows)
        video = build.embeddings(live) if live else _empty_like(build)
        times = (
            np.stack([build.frame_times(v) for v in live]) if live else np.zeros((0, 1), np.float32)
        )
        build.manifest = {**build.manifest, "parts": []}
        return publish(index_dir, build, live, video, times, add_vectors=False)


def _empty_like(build: Build) -> VideoEmbeddings:
    return VideoEmbeddings(**{f: torch.zeros(0) for f in FIELDS})
