"""Index builds on disk, the read side: level vectors (FAISS) and rerank rows, published atomically.

    index/CURRENT                      "<build>/<version>", replaced atomically
    index/builds/<build>/<version>/    one immutable version of a build:
        manifest.json                  checkpoint hash and config, factory, parts, counts
        vectors/                       FAISS indexes per level (+ tombstones)
        parts/<n>/rows.npy             rerank rows, one record per unit (a video's segment):
                                       its fields in the build's row format (index.rows) but
                                       its summary's, and its Gram matrices; memory-mapped
                                       by readers, linked from earlier versions, never rewritten
        parts/<n>/summary.npy          one record per unit: global vector, concept probabilities
        parts/<n>/*.npy                unit_ids, spans (seconds), frame_times; older parts:
                                       probabilities, or every field, in files of their own

A writer prepares the next version in a temporary folder, renames it into place and then
replaces CURRENT, so a reader sees the old version or the new one, never half of one. Writers
(several indexer workers, deletes, compaction) take ``index/.write-lock`` and build on the
latest version, so none drops another's videos or tombstones. A video is published whole (all
its units in one part); re-indexed later, it appears in a newer part, whose units replace all
of the earlier ones. A delete's version is all hard
links to the previous one's files but for vectors.json (a longer tombstone list) and the
manifest: readers and writers holding the previous version take the tombstones and keep what
they have loaded (same files: same (st_dev, st_ino)).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from index import rows as formats
from index.pages import RowPaging, file_arrays, fits, touch
from index.rows import part_format
from index.vectors import INDEX_FILES, LEVELS, UNIT_BITS, FaissStore, read_meta, video_of
from model import VideoEmbeddings
from model.scores import UNIT_FIELDS

FORMAT = "hanet-index-build"
UNITS_FORMAT = 2  # manifest "units": builds of segment units (1: one unit per video, by id)
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
# rerank reads each unit vector once (docs/design.md, "Serving path").
GRAM_FILES = {name: f"gram_{name}" for name in UNIT_FIELDS}
GRAM_CHUNK = 4096  # videos whose Gram matrices are computed at once (compaction writes all)
_BESIDE = ("frame_times", "spans")  # part files a rerank does not read
_NOT_ROWS = {*_BESIDE, *formats.STRUCTURED, *GRAM_FILES.values()}
# ``Build.warm`` reads the rows in when they take at most this share of the available memory
# (0: never; each search then reads its candidates' rows cold, ``index.pages``)
WARM_SHARE = 0.5


class BuildError(Exception):
    """No usable build, or one made by another model than the one asked for."""


FileId = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)


@dataclass
class Build:
    """One published version, the read side's view of it: the level indexes (FAISS, loaded),
    the rerank rows (memory-mapped), which units are live. Searches use its public methods;
    unit ids are ``index.vectors.unit_id(video, segment)``."""

    root: Path
    manifest: dict
    vectors: FaissStore
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)  # live unit -> (part, row)
    # the files this build's memory was read from, by path under ``root``: a later version
    # holding the same files (hard links: a delete's version) can share what is loaded
    file_ids: dict[str, FileId] = field(default_factory=dict)
    paging: RowPaging = field(default_factory=RowPaging)  # shared by builds sharing ``parts``

    @property
    def checkpoint_sha256(self) -> str:
        return self.manifest["checkpoint_sha256"]

    @property
    def name(self) -> str:
        """The published version's name as CURRENT holds it: "<build>/v<version>"."""
        return f"{self.manifest['build']}/v{self.manifest['version']}"

    def __len__(self) -> int:
        """Live videos (indexed and not deleted)."""
        return len(self._units_by_video())

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._units_by_video()

    def video_ids(self) -> list[int]:
        """The live videos' ids, ascending."""
        return sorted(self._units_by_video())

    def units(self, video_id: int) -> list[int]:
        """A live video's unit ids in segment order ([] when it is not in this build)."""
        return self._units_by_video().get(video_id, [])

    def most_units(self) -> int:
        """The most units one live video has (1 for a library of short clips)."""
        return self._by_video()[1]

    def _units_by_video(self) -> dict[int, list[int]]:
        return self._by_video()[0]

    def _by_video(self) -> tuple[dict[int, list[int]], int]:
        """Each live video's units and the most any has, computed once per set of rows (a
        search asks for the most on every query)."""
        cached = self.__dict__.get("_units_cache")
        if cached is None or cached[0] is not self.rows or cached[1] != len(self.rows):
            by_video: dict[int, list[int]] = {}
            for unit in sorted(self.rows):
                by_video.setdefault(unit >> UNIT_BITS, []).append(unit)
            most = max(map(len, by_video.values()), default=1)
            cached = self.__dict__["_units_cache"] = (self.rows, len(self.rows), by_video, most)
        return cached[2], cached[3]

    def known(self, unit_ids: np.ndarray) -> np.ndarray:
        """(N,) bool: which of these units are in this build and not deleted."""
        ids = np.asarray(unit_ids).reshape(-1).tolist()
        return np.fromiter(map(self.rows.__contains__, ids), bool, len(ids))

    def top_videos(
        self, level: str, queries: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per query (Q, D), the best ``k`` videos at one level (``FaissStore.top_videos``):
        their ids, best vectors' scores and key segment indexes, best first, deleted ones
        hidden."""
        return self.vectors.top_videos(level, queries, k)

    def top_units(
        self, level: str, queries: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``top_videos`` for units: the best ``k`` units (a video may give several)."""
        return self.vectors.top_units(level, queries, k)

    def summary(self) -> dict:
        """What this build is, for status pages and ``hanet index status``."""
        return {
            "name": self.name,
            "build": self.manifest["build"],
            "version": self.manifest["version"],
            "checkpoint_sha256": self.checkpoint_sha256,
            "factory": self.manifest.get("factory", self.vectors.factory),
            "videos": len(self),
            "units": len(self.rows),
            "vectors": {level: self.vectors.count(level) for level in LEVELS},
            "deleted_pending_compaction": len(self.vectors.deleted & self.vectors.videos),
        }

    def embeddings(self, unit_ids: list[int]) -> VideoEmbeddings:
        """The stored VideoEmbeddings of these units, in this order, decoded from the parts'
        row format (``index.rows.decode``): the embedding vectors (HALF_FIELDS) in float16
        (float32 where an int8 part holds one of them), the concept probabilities in
        float32."""
        return self._embeddings_at(self.where(unit_ids), self.parts)

    def rerank_rows(
        self, unit_ids: list[int]
    ) -> tuple[VideoEmbeddings, dict[str, torch.Tensor] | None]:
        """``embeddings`` and ``grams`` of these units at once (a search's rerank)."""
        where, parts = self.where(unit_ids), self.parts
        if self.paging.cold:  # larger than memory: read with system calls, not mapped
            parts, where = self.paging.read(parts, where, leave=_BESIDE)
        return self._embeddings_at(where, parts), self._grams_at(where, parts)

    @staticmethod
    def _embeddings_at(where: np.ndarray, parts: formats.Parts) -> VideoEmbeddings:
        return VideoEmbeddings(
            **{name: formats.gather_decoded(parts, name, where) for name in FIELDS}
        )

    def stored(self, unit_ids: list[int], fmt: str) -> dict[str, np.ndarray] | None:
        """These units' rows as their parts store them (``index.rows``; by file name, Gram
        matrices, frame times and spans left out), in this order, when every part holding
        them is in row format ``fmt``; else None (compaction then codes them again)."""
        where = self.where(unit_ids)
        used = [self.parts[p] for p in set(where[:, 0].tolist())]
        if not used or any(part_format(p) != fmt for p in used):
            return None
        names = [n for n in used[0] if n not in _NOT_ROWS]
        return {name: formats.gather(self.parts, name, where) for name in names}

    def grams(self, unit_ids: list[int]) -> dict[str, torch.Tensor] | None:
        """The stored Gram matrices of these units' vectors (``model.scores.unit_grams``), in
        this order; None when a part holding one of them has none (written before they were)."""
        return self._grams_at(self.where(unit_ids), self.parts)

    @staticmethod
    def _grams_at(where: np.ndarray, parts: formats.Parts) -> dict[str, torch.Tensor] | None:
        used = set(where[:, 0].tolist()) or set(range(len(parts)))
        if not used or any(f not in parts[p] for p in used for f in GRAM_FILES.values()):
            return None
        got = {name: formats.gather(parts, file, where) for name, file in GRAM_FILES.items()}
        return {name: torch.from_numpy(array) for name, array in got.items()}

    def where(self, unit_ids: list[int]) -> np.ndarray:
        """(N, 2) each unit's (part, row); BuildError for a unit not in this build."""
        if missing := [u for u in unit_ids if u not in self.rows]:
            raise BuildError(f"units not in this build: {missing[:5]}")
        return np.array([self.rows[u] for u in unit_ids], dtype=np.int64).reshape(-1, 2)

    def frame_times(self, unit: int) -> np.ndarray:
        """(T,) a unit's sampled frames' timestamps in its video, seconds (padding after the
        valid ones)."""
        part, row = self._row(unit)
        return self.parts[part]["frame_times"][row]

    def span(self, unit: int) -> tuple[float, float]:
        """A unit's start and end in its video, seconds."""
        part, row = self._row(unit)
        start, end = self.parts[part]["spans"][row].tolist()
        return start, end

    def _row(self, unit: int) -> tuple[int, int]:
        if unit not in self.rows:
            raise BuildError(f"unit {unit} is not in this build")
        return self.rows[unit]

    def warm(self, rows: bool = True, share: float | None = None, summaries: float = 0.0) -> int:
        """Build the selector that hides deleted videos (once here rather than by the first
        search) and, with ``rows``, touch every page of the memory-mapped rerank rows once, so
        that searches find them in memory (page cache and this process's page tables) rather
        than faulting on each candidate. When the rows would take more than ``share`` (default
        ``WARM_SHARE``) of the available memory they are read cold (``index.pages``: each
        search's rows read with system calls, none mapped), but for the units' summaries
        (``index.rows.SUMMARY_FILES``), touched and kept when they take at most ``summaries``
        of it. Returns the bytes touched."""
        for level in LEVELS:
            self.vectors.tombstone_selector(level)
        files = [file_arrays(part) for part in self.parts] if rows else []
        arrays = [a for part in files for a in part.values()]
        if fits(sum(a.nbytes for a in arrays), WARM_SHARE if share is None else share):
            return touch(arrays)  # no rows: 0 fits
        kept = [a for part in files for n, a in part.items() if n in formats.SUMMARY_FILES]
        if not summaries or not fits(sum(a.nbytes for a in kept), summaries):
            kept = []
        held = {id(a) for a in kept}
        self.paging.go_cold([a for a in arrays if id(a) not in held])
        self.paging.summaries = bool(kept)
        return touch(kept)

    def shares_rows(self, other: Build) -> bool:
        """Whether this build reads the very memory-mapped rows of ``other`` (one made from it
        by ``load_current(reuse=other)``): warming one warms both."""
        return self.parts is other.parts

    def _shares_files(self, root: Path, manifest: dict) -> bool:
        """Whether the version at ``root`` holds the files this build was read from (FAISS
        indexes and every rerank part): a version that only adds tombstones."""
        if manifest["build"] != self.manifest.get("build"):
            return False
        if manifest["parts"] != self.manifest.get("parts") or len(self.parts) != len(
            manifest["parts"]
        ):
            return False
        needed = [f"vectors/{f}" for f in INDEX_FILES]
        needed += [f"parts/{p}/unit_ids.npy" for p in manifest["parts"]]
        if any(path not in self.file_ids for path in needed):
            return False
        return all(file_id(root / path) == known for path, known in self.file_ids.items())

    def _with_tombstones(self, root: Path, manifest: dict) -> Build:
        """This build at a later version that holds the same files: its loaded indexes and
        memory-mapped rows, the later version's tombstones."""
        deleted = set(read_meta(root / "vectors").get("deleted", []))
        vectors = self.vectors.with_deleted(deleted)
        if deleted >= self.vectors.deleted:  # tombstones only ever added: drop the new ones
            rows = without_videos(self.rows, deleted - self.vectors.deleted)
        else:
            rows = _rows(root, manifest["parts"], deleted)
        return Build(root, manifest, vectors, self.parts, rows, dict(self.file_ids), self.paging)


def file_id(path: Path) -> FileId | None:
    """What identifies a file's contents across hard links (None: no such file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def current_name(index_dir: Path) -> str | None:
    """The published version's name, "<build>/v<version>" (None: nothing published yet)."""
    try:
        return (index_dir / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None


def read_manifest(root: Path) -> dict:
    """A version's manifest.json (``root``: builds/<build>/<version>)."""
    return json.loads((root / "manifest.json").read_text())


def load_current(
    index_dir: Path, expect_checkpoint: str | None = None, reuse: Build | None = None
) -> Build:
    """The published build; with ``expect_checkpoint``, refuse a build of another model.
    ``reuse``, a build read earlier: when the published version holds the same FAISS files and
    rerank parts (hard links: a delete made it), the result shares its loaded indexes and
    memory-mapped rows and only the tombstones are read."""
    name = current_name(index_dir)
    if name is None:
        raise BuildError(f"no index build in {index_dir} yet: run `hanet index run`")
    root = index_dir / "builds" / name
    manifest = read_manifest(root)
    if manifest.get("units", 1) != UNITS_FORMAT:
        raise BuildError(
            "the index build predates segment units (one unit per video): run `hanet index "
            "rebuild` to index the videos again"
        )
    if expect_checkpoint and manifest["checkpoint_sha256"] != expect_checkpoint:
        raise BuildError(
            f"the index build was made by checkpoint {manifest['checkpoint_sha256'][:12]}, not "
            f"the loaded {expect_checkpoint[:12]}: run `hanet index rebuild`"
        )
    if reuse is not None and reuse._shares_files(root, manifest):
        return reuse._with_tombstones(root, manifest)
    return _load(root, manifest)


def _load(root: Path, manifest: dict) -> Build:
    """One version read from its files: FAISS indexes into memory, rerank rows memory-mapped."""
    ids = {f"vectors/{f}": file_id(root / "vectors" / f) for f in INDEX_FILES}
    vectors = FaissStore.load(root / "vectors")
    parts = []
    for part in manifest["parts"]:
        folder = root / "parts" / part
        arrays, files = load_part(folder)
        parts.append(arrays)
        for f in [*files, "unit_ids"]:
            ids[f"parts/{part}/{f}.npy"] = file_id(folder / f"{f}.npy")
    rows = _rows(root, manifest["parts"], vectors.deleted)
    known = {path: i for path, i in ids.items() if i is not None}
    return Build(root, manifest, vectors, parts, rows, known)


def load_part(folder: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A part's arrays memory-mapped, by file name (a records part: its records by their
    file's name, ``rows.STRUCTURED``, and a view of each field by its name), and files read."""
    arrays, read = {}, []
    for file in (f for f in formats.STRUCTURED if (folder / f"{f}.npy").exists()):
        records = np.load(folder / f"{file}.npy", mmap_mode="r")
        arrays.update({file: records, **{f: records[f] for f in records.dtype.names}})
        read.append(file)
    names = [] if formats.SUMMARY in read else [*formats.PROB_FIELDS]  # before summaries
    if not read:  # written before records: a file per field
        optional = [*GRAM_FILES.values(), *(f + formats.SCALE for f in formats.VECTOR_FIELDS)]
        names = [*FIELDS, *(f for f in optional if (folder / f"{f}.npy").exists())]
    names += ["frame_times", "spans"]
    arrays.update({f: np.load(folder / f"{f}.npy", mmap_mode="r") for f in names})
    return arrays, read + names


def _rows(root: Path, parts: list[str], deleted: set[int]) -> dict[int, tuple[int, int]]:
    """Live unit -> (part, row): the newest part holding a video wins, for all its units (a
    video re-indexed with fewer segments keeps none of its older ones)."""
    ids = [np.load(root / "parts" / part / "unit_ids.npy") for part in parts]
    if not ids:
        return {}
    units = np.concatenate(ids)
    part_of = np.concatenate([np.full(len(a), n, np.int64) for n, a in enumerate(ids)])
    row_of = np.concatenate([np.arange(len(a), dtype=np.int64) for a in ids])
    videos = video_of(units)
    newest = {}  # video -> the newest part holding it
    for video, part in zip(videos.tolist(), part_of.tolist(), strict=True):
        newest[video] = part
    pairs = zip(videos.tolist(), part_of.tolist(), strict=True)
    keep = np.fromiter((newest[v] == p and v not in deleted for v, p in pairs), bool, len(units))
    where = zip(part_of[keep].tolist(), row_of[keep].tolist(), strict=True)
    return dict(zip(units[keep].tolist(), where, strict=True))


def without_videos(
    rows: dict[int, tuple[int, int]], videos: set[int]
) -> dict[int, tuple[int, int]]:
    """``rows`` less the units of these videos (a copy)."""
    if not videos:
        return dict(rows)
    return {unit: where for unit, where in rows.items() if unit >> UNIT_BITS not in videos}
