"""Vector storage for the three HANet levels, behind a small interface; FAISS implements it.

A video is indexed as one or more units, its segments (a short clip is one unit; a long video
is cut at its shots, see ``indexer.segments``). One index per level: ``event`` (one vector per
unit), ``action`` (the unit's key action segments) and ``entity`` (its key entity segments).
Ids keep a video's vectors contiguous and tell where a hit is: a unit's id is
``video_id << UNIT_BITS | segment`` (``unit_id``), a vector's ``unit_id * SEGMENT_SLOTS +
index``, so every vector of a video, and of each of its units, is one id range. Deletions are
tombstones of video ids, filtered out of every search at once (per-call search parameters: the
shared index is never mutated per request) and dropped from the index files at the next
``compact``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from index.faiss_types import train_size, without_polysemous_training
from index.id_ranges import both, deeper, ids_in_ranges, sorted_ids

LEVELS = ("event", "action", "entity")
SEGMENT_SLOTS = 64  # vectors per unit and level (a checkpoint's key segments fit: config checks)
UNIT_BITS = 20  # segments per video: 2**20
MAX_UNITS = 1 << UNIT_BITS
FETCH_PER_VIDEO = 4
MAX_EF_SEARCH = 4096  # a filtered HNSW search's deepest efSearch
FORMAT = "hanet-vectors"
INDEX_FILES = tuple(f"{level}.faiss" for level in LEVELS)  # in a store's folder
META_FILE = "vectors.json"  # what the indexes are, and the tombstones


class VectorStoreError(Exception):
    """A store that cannot be used as asked (unknown level, bad shapes, unreadable files)."""


def unit_id(video_id: int, segment: int) -> int:
    """The id of a video's ``segment``-th unit (0 for a video indexed as one unit)."""
    if not 0 <= segment < MAX_UNITS:
        raise VectorStoreError(f"a video holds at most {MAX_UNITS} units")
    return (int(video_id) << UNIT_BITS) | int(segment)


def video_of(unit_ids: np.ndarray | int) -> np.ndarray | int:
    """The video each unit id belongs to."""
    if isinstance(unit_ids, int | np.integer):
        return int(unit_ids) >> UNIT_BITS
    return np.asarray(unit_ids, dtype=np.int64) >> UNIT_BITS


def vector_ids(unit: int, count: int) -> np.ndarray:
    if not 0 < count <= SEGMENT_SLOTS:
        raise VectorStoreError(f"a unit holds 1 to {SEGMENT_SLOTS} vectors per level")
    return unit * SEGMENT_SLOTS + np.arange(count, dtype=np.int64)


def _video_of_vectors(ids: np.ndarray) -> np.ndarray:
    return ids // (SEGMENT_SLOTS << UNIT_BITS)


@dataclass(frozen=True)
class VideoHit:
    """A video found at one level: its best vector's score, which unit held it and which of
    the unit's vectors it was (the key segment: for the action level, where the match is)."""

    video_id: int
    score: float
    segment: int
    unit: int


class VectorStore(Protocol):
    def add(
        self, video_id: int, vectors: dict[str, np.ndarray] | list[dict[str, np.ndarray]]
    ) -> None: ...

    def delete(self, video_ids: Iterable[int]) -> None: ...

    def search(self, level: str, queries: np.ndarray, k: int) -> list[list[VideoHit]]: ...

    def count(self, level: str) -> int: ...


class FaissStore:
    """FAISS indexes (inner product on L2-normalised vectors = cosine), one per level, built
    from a factory string ("Flat", "IVF1024,Flat", "IVF4096,PQ64", "HNSW32")."""

    def __init__(self, dim: int, factory: str = "Flat", nprobe: int = 16, ef_search: int = 128):
        self.dim, self.factory, self.nprobe, self.ef_search = dim, factory, nprobe, ef_search
        self.train_size = train_size(self._new_index())
        # A level whose index type must be trained first (IVF, PQ) starts on an exact Flat
        # "staging" index and moves to its real index once it holds train_size vectors.
        self.staged: set[str] = set(LEVELS) if self.train_size else set()
        self.indexes = {level: self._fresh(level) for level in LEVELS}
        self.videos: set[int] = set()  # videos with vectors in the indexes (deleted included)
        self.deleted: set[int] = set()
        # per level: (deleted ids, selector, what it points to)
        self._selector_cache: dict[object, tuple] = {}

    def _new_index(self, factory: str | None = None) -> faiss.Index:
        factory = factory or self.factory
        try:
            index = faiss.index_factory(self.dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise VectorStoreError(f"bad FAISS factory string {factory!r}: {exc}") from exc
        return without_polysemous_training(index)

    def _fresh(self, level: str) -> faiss.Index:
        return self._new_index("Flat" if level in self.staged else None)

    def _train_staged(self) -> None:
        """Move each staged level that now holds enough vectors to its real, trained index."""
        for level in sorted(self.staged):
            staging = self.indexes[level]
            if staging.ntotal < self.train_size:
                continue
            ids, vectors = _stored(staging)
            self.indexes[level] = _filled(self._new_index(), vectors, ids)
            self.staged.discard(level)

    def _index(self, level: str) -> faiss.Index:
        if level not in self.indexes:
            raise VectorStoreError(f"unknown level {level!r}; levels: {LEVELS}")
        return self.indexes[level]

    def add(
        self, video_id: int, vectors: dict[str, np.ndarray] | list[dict[str, np.ndarray]]
    ) -> None:
        """Add one video's vectors, (n, D) per level: of its one unit (a dict), or of each of
        its units in segment order (a list). Re-adding a video (re-indexing it) replaces all
        its units. A tombstone is never cleared: ids are never given to two videos (the database
        never reuses them), so a deleted id stays deleted, and its vectors, if added again,
        stay hidden (the writer does not add tombstoned ids at all)."""
        units = [vectors] if isinstance(vectors, dict) else vectors
        if video_id in self.videos:
            self._remove_physically([video_id])
        for level in LEVELS:
            ids, rows = [], []
            for segment, unit_vectors in enumerate(units):
                if level not in unit_vectors:
                    continue
                x = np.ascontiguousarray(np.atleast_2d(unit_vectors[level]), dtype=np.float32)
                if x.shape[1] != self.dim:
                    raise VectorStoreError(f"{level} vectors have dim {x.shape[1]}, not {self.dim}")
                rows.append(x)
                ids.append(vector_ids(unit_id(video_id, segment), len(x)))
            if rows:
                self._index(level).add_with_ids(np.concatenate(rows), np.concatenate(ids))
        self.videos.add(video_id)
        if self.staged:
            self._train_staged()

    def delete(self, video_ids: Iterable[int]) -> None:
        """Gone from search results at once; gone from the index files at ``compact``."""
        self.deleted.update(int(v) for v in video_ids)

    def with_deleted(self, deleted: Iterable[int]) -> FaissStore:
        """This store with another set of tombstones, sharing its FAISS index objects (not
        copied: for a reader, or for a writer that drops this store for the new one)."""
        store = copy.copy(self)
        store.indexes, store.staged = dict(self.indexes), set(self.staged)
        store.videos, store.deleted = set(self.videos), {int(v) for v in deleted}
        store._selector_cache = {}
        return store

    def _remove_physically(self, video_ids: Iterable[int]) -> None:
        """Drop these videos' vectors from every level's index: in place where the index type
        can remove, else by rebuilding the level from its own vectors (HNSW)."""
        gone = np.fromiter(video_ids, dtype=np.int64)
        for level, index in list(self.indexes.items()):
            ids = faiss.vector_to_array(faiss.downcast_index(index).id_map)
            keep = ~np.isin(_video_of_vectors(ids), gone)
            if keep.all():
                continue
            try:
                index.remove_ids(faiss.IDSelectorBatch(ids[~keep]))
            except RuntimeError:  # no in-place removal: rebuild from stored vectors
                _, vectors = _stored(index)
                self.indexes[level] = _filled(self._fresh(level), vectors[keep], ids[keep])
        self.videos -= set(gone.tolist())

    def compact(self) -> None:
        """Drop deleted videos' vectors from the indexes (rebuilt from their own contents
        where the index type cannot remove in place, e.g. HNSW). The tombstones stay: a
        worker that still holds a deleted video must not publish it later (they are a list of
        ids; only those with vectors cost a search anything)."""
        if self.deleted & self.videos:
            self._remove_physically(self.deleted & self.videos)

    def _params(
        self, level: str, videos: np.ndarray | None = None
    ) -> tuple[faiss.SearchParameters | None, tuple]:
        """Per-call search parameters, and the objects they point to (which must outlive the
        search: FAISS holds raw pointers); ``videos``: only these videos' vectors, searched
        deeper by an approximate index as the filter narrows (``id_ranges.deeper``)."""
        sel, refs = self.tombstone_selector(level)
        share = 1.0
        if videos is not None:
            only, only_refs = self.video_selector(level, videos)
            share = len(only_refs[0]) / max(1, self._index(level).ntotal)
            sel, refs = (only, only_refs) if sel is None else both(sel, only, refs + only_refs)
        inner = faiss.downcast_index(faiss.downcast_index(self.indexes[level]).index)
        if isinstance(inner, faiss.IndexIVF):
            # Split a search over the probed lists, not over the queries: the service asks one
            # to three queries at a time, and per query FAISS would use one thread (measured
            # faster: docs/benchmarks.md).
            inner.parallel_mode = 1
            nprobe = min(inner.nlist, deeper(self.nprobe, share))
            return faiss.SearchParametersIVF(sel=sel, nprobe=nprobe), refs
        if isinstance(inner, faiss.IndexHNSW):
            ef = min(MAX_EF_SEARCH, deeper(self.ef_search, share))
            return faiss.SearchParametersHNSW(sel=sel, efSearch=ef), refs
        return (faiss.SearchParameters(sel=sel) if sel is not None else None), refs

    def tombstone_selector(self, level: str = "event") -> tuple[faiss.IDSelector | None, tuple]:
        """The selector that hides deleted videos at one level, built once per set of
        deletions from the level's stored ids (searches reuse it, FAISS only reads it). Only
        tombstones of videos with vectors in the indexes go in it."""
        key = frozenset(self.deleted & self.videos)
        if not key:
            return None, ()
        cached = self._selector_cache.get(level)
        if cached is None or cached[0] != key:
            stored = faiss.vector_to_array(faiss.downcast_index(self._index(level)).id_map)
            ids = stored[np.isin(_video_of_vectors(stored), np.fromiter(key, np.int64))]
            batch = faiss.IDSelectorBatch(ids)
            sel = faiss.IDSelectorNot(batch)
            cached = self._selector_cache[level] = (key, sel, (ids, batch, sel))
        return cached[1], cached[2]

    def video_selector(self, level: str, videos: np.ndarray) -> tuple[faiss.IDSelector, tuple]:
        """A selector of the stored vectors of ``videos`` (any order) at one level: one id
        range per video in the level's sorted ids (sorted once per index size)."""
        stored = sorted_ids(self._index(level), self._selector_cache, ("sorted", level))
        first = np.asarray(videos, np.int64).reshape(-1) * (SEGMENT_SLOTS << UNIT_BITS)
        ids = ids_in_ranges(stored, first, SEGMENT_SLOTS << UNIT_BITS)
        batch = faiss.IDSelectorBatch(ids)
        return batch, (ids, batch)

    def search(self, level: str, queries: np.ndarray, k: int) -> list[list[VideoHit]]:
        """Top ``k`` videos per query at one level, each with its best vector's score."""
        return [
            [
                VideoHit(int(video_of(int(u))), float(s), int(g), int(u))
                for u, s, g in zip(*row, strict=True)
            ]
            for row in self._top(level, queries, k, by_video=True)
        ]

    def top_videos(
        self, level: str, queries: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``search`` as arrays, per query: video ids, their best vectors' scores and key
        segment indexes, best first."""
        return [(video_of(u), s, g) for u, s, g in self._top(level, queries, k, by_video=True)]

    def top_units(
        self, level: str, queries: np.ndarray, k: int, videos: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per query, the best ``k`` units (segments of videos): their unit ids, best vectors'
        scores and key segment indexes, best first (the service's candidate search: no object
        per hit). ``videos``: among these videos' units only (an IDSelector: a full list)."""
        return self._top(level, queries, k, by_video=False, videos=videos)

    def _top(
        self, level: str, queries: np.ndarray, k: int, by_video: bool, videos=None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        index = self._index(level)
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        # A unit can fill several of the top hits with its segments: fetch more than k hits,
        # up to FETCH_PER_VIDEO per wanted unit (all of a unit's vectors rarely all rank high).
        per_unit = 1 if level == "event" else max(1, self._vectors_per_unit(level))
        fetch = min(index.ntotal, k * min(per_unit, FETCH_PER_VIDEO))
        if fetch == 0:
            empty = np.zeros(0, np.int64)
            return [(empty, np.zeros(0, np.float32), empty) for _ in q]
        params, _refs = self._params(level, videos)
        scores, ids = index.search(q, fetch, params=params)
        return [
            _group(row_scores, row_ids, k, by_video)
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def _vectors_per_unit(self, level: str) -> int:
        units = max(1, self.indexes["event"].ntotal)
        return int(np.ceil(self.indexes[level].ntotal / units))

    def count(self, level: str) -> int:
        return int(self._index(level).ntotal)

    def save(self, folder: Path) -> None:
        """Write the indexes and a small JSON saying what they are (atomically per file)."""
        folder.mkdir(parents=True, exist_ok=True)
        for level, index in self.indexes.items():
            tmp = folder / f".{level}.faiss.tmp"
            faiss.write_index(index, str(tmp))
            os.replace(tmp, folder / f"{level}.faiss")
        meta = {
            "format": FORMAT,
            "dim": self.dim,
            "factory": self.factory,
            "deleted": sorted(self.deleted),
            "staged": sorted(self.staged),
            "counts": {level: self.count(level) for level in LEVELS},
        }
        write_meta(folder, meta)

    @classmethod
    def load(cls, folder: Path, nprobe: int = 16, ef_search: int = 128) -> FaissStore:
        try:
            meta = read_meta(folder)
            store = cls(meta["dim"], meta["factory"], nprobe, ef_search)
            store.staged = set(meta.get("staged", []))
            store.indexes = {lv: faiss.read_index(str(folder / f"{lv}.faiss")) for lv in LEVELS}
        except (OSError, KeyError, ValueError, RuntimeError, VectorStoreError) as exc:
            raise VectorStoreError(f"cannot read the vector store in {folder}: {exc}") from exc
        store.deleted = set(meta.get("deleted", []))
        event_ids = faiss.vector_to_array(faiss.downcast_index(store.indexes["event"]).id_map)
        store.videos = set(_video_of_vectors(event_ids).tolist())
        return store


def read_meta(folder: Path) -> dict:
    """A store folder's vectors.json (dim, factory, deleted, staged, counts), without its
    indexes."""
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise VectorStoreError(f"cannot read {folder / META_FILE}: {exc}") from exc


def write_meta(folder: Path, meta: dict) -> None:
    """Write a store folder's vectors.json atomically."""
    tmp = folder / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / META_FILE)


def _stored(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """An IDMap2 index's ids and vectors, in insertion order."""
    idmap = faiss.downcast_index(index)
    vectors = (
        idmap.index.reconstruct_n(0, index.ntotal)
        if index.ntotal
        else np.zeros((0, index.d), np.float32)
    )
    return faiss.vector_to_array(idmap.id_map), vectors


def _filled(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """``index`` trained on ``vectors`` (if it needs training) and holding them."""
    if len(vectors):
        if not index.is_trained:
            index.train(vectors)
        index.add_with_ids(vectors, ids)
    return index


def _group(
    scores: np.ndarray, ids: np.ndarray, k: int, by_video: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hits (best first, as FAISS returns them) -> each unit (or, ``by_video``, each video)
    once, at its best vector: the top ``k`` units' ids (the video's best unit), scores and key
    segment indexes."""
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    order = np.argsort(-scores, kind="stable")
    scores, ids = scores[order], ids[order]
    units = ids // SEGMENT_SLOTS
    _, first = np.unique(video_of(units) if by_video else units, return_index=True)
    first = np.sort(first)[:k]
    return units[first], scores[first], ids[first] % SEGMENT_SLOTS
