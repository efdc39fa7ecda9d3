"""Index builds on disk, the read side: level vectors (FAISS) and rerank rows, published atomically.

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

import json
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from index.vectors import FaissStore
from model import VideoEmbeddings
from model.scores import UNIT_FIELDS

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


def current_name(index_dir: Path) -> str | None:
    """The published version's name, "<build>/v<version>" (None: nothing published yet)."""
    try:
        return (index_dir / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None


def load_current(index_dir: Path, expect_checkpoint: str | None = None) -> Build:
    """The published build; with ``expect_checkpoint``, refuse a build of another model."""
    name = current_name(index_dir)
    if name is None:
        raise BuildError(f"no index build in {index_dir} yet: run `hanet index run`")
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
