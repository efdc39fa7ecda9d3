"""The vector store in Milvus: the three levels' vectors and each unit's rerank payload, in
collections of one build, shared by every process that reaches the Milvus server (no shared
directory, no file lock).

    <prefix>_meta                    key -> JSON: "current" (the published build), the builds
    <prefix>_tombstones              deleted video ids (ids are never reused: one list for all)
    <prefix>_<build>_event|action|entity
                                     id = unit * SEGMENT_SLOTS + slot (``index.vectors``),
                                     unit, video, vector (inner product, FLAT or HNSW)
    <prefix>_<build>_rows            id = unit * PAYLOAD_CHUNKS + chunk: the unit's rerank
                                     payload (``index.milvus_rows``), in VARCHAR chunks

Writes are upserts keyed by those ids, so a video written twice (a worker killed after its
write, its job claimed again) is stored once. Collections are read with Strong consistency:
what one process wrote is what the next search of any other process sees. Milvus Lite
(``pymilvus`` with ``milvus-lite``, a local ``.db`` file, one process) runs the same code for
tests; a ``milvus-lite server`` or Milvus standalone/cluster serves several processes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.vectors import (
    FETCH_PER_VIDEO,
    LEVELS,
    SEGMENT_SLOTS,
    VectorStoreError,
    VideoHit,
    unit_id,
    vector_ids,
    video_of,
)

STRONG = "Strong"
DUMMY_DIM = 2  # Milvus needs a vector field in every collection: meta rows carry a zero one
INSERT_ROWS = 512  # rows per insert request (well under the server's message size)
MAX_TOPK = 16384  # Milvus's largest search limit
INDEX_TYPES = {"Flat": "FLAT", "HNSW32": "HNSW"}  # FAISS factory strings Milvus mirrors
PAYLOAD_CHUNKS = 64  # VARCHAR chunks a unit's payload may take
CHUNK_CHARS = 65_000  # characters per chunk (a VARCHAR holds at most 65,535)
# the rows collection's fields besides id, unit and video
ROW_FIELDS = [
    ("segments", "INT64", {}),  # units of the unit's video (the deepest search a video needs)
    ("chunk", "INT64", {}),
    ("chunks", "INT64", {}),  # the unit's payload chunks, in all
    ("blob", "VARCHAR", {"max_length": CHUNK_CHARS}),
]


@dataclass(frozen=True)
class MilvusTarget:
    """Where the index lives in Milvus: the server (``http://host:19530``) or a Milvus Lite
    file (``.../milvus.db``), its token, and the prefix of every collection's name."""

    uri: str
    token: str | None = None
    prefix: str = "hanet"

    def client(self):  # -> pymilvus.MilvusClient
        return _client(self.uri, self.token or "")

    def name(self, *parts: str) -> str:
        return "_".join([self.prefix, *parts])


_CLIENTS: dict[tuple[str, str], object] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(uri: str, token: str):
    """One client per server and process (Milvus Lite allows one process per file, and its
    client starts the engine: opened once, shared by the process's threads)."""
    from pymilvus import MilvusClient

    with _CLIENTS_LOCK:
        key = (uri, token)
        if key not in _CLIENTS:
            _CLIENTS[key] = MilvusClient(uri=uri, token=token)
        return _CLIENTS[key]


# Index locations served by Milvus in this process: the composition root
# (``service.runtime.index_target``) registers them, so the entry points that pass an index
# folder (the indexer job, deletes from the API) reach Milvus instead of FAISS files there.
_TARGETS: dict[Path, MilvusTarget] = {}


def use_milvus(index_dir: Path, target: MilvusTarget | None) -> None:
    """Serve ``index_dir`` from ``target`` in this process (None: from its FAISS files)."""
    key = Path(index_dir).resolve()
    if target is None:
        _TARGETS.pop(key, None)
    else:
        _TARGETS[key] = target


def resolve(index: Path | MilvusTarget) -> Path | MilvusTarget:
    """The Milvus target registered for an index folder, or the folder itself."""
    if isinstance(index, MilvusTarget):
        return index
    return _TARGETS.get(Path(index).resolve(), index)


_ENSURED: set[tuple[int, str]] = set()  # collections known to exist, per client


def forget(client, names: Iterable[str]) -> None:
    """Collections dropped: ``ensure_collection`` creates them again when asked."""
    for name in names:
        _ENSURED.discard((id(client), name))


def _schema(client, fields: list[tuple], vector_dim: int):
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    for name, kind, extra in fields:
        schema.add_field(name, getattr(DataType, kind), **extra)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vector_dim)
    return schema


def ensure_collection(
    client, name: str, fields: list[tuple], dim: int, metric: str = "L2", index: str = "FLAT"
) -> None:
    """Create a collection unless it exists (several workers may race to: the loser's
    create fails on a collection that now exists, which is what it wanted)."""
    key = (id(client), name)
    if key in _ENSURED or client.has_collection(name):
        _ENSURED.add(key)
        return
    try:
        client.create_collection(
            name, schema=_schema(client, fields, dim), consistency_level=STRONG
        )
    except Exception:
        if not client.has_collection(name):
            raise
    _index_and_load(client, name, metric, index)
    _ENSURED.add(key)


def _index_and_load(client, name: str, metric: str, index: str) -> None:
    """The vector index of a new (empty) collection, then the collection loaded. The index
    request does not wait for the build (pymilvus polls every half second for it, and an empty
    collection has nothing to build); a process that lost the race to create the collection
    finds the index made and loads it too (a load is idempotent)."""
    params = client.prepare_index_params()
    extra = {"M": 32, "efConstruction": 200} if index == "HNSW" else {}
    params.add_index("vector", index_type=index, metric_type=metric, params=extra)
    try:
        client.create_index(name, params, _async=True)
    except Exception:
        if not client.list_indexes(name):
            raise
    client.load_collection(name)


def insert(client, name: str, rows: list[dict]) -> None:
    """Upsert rows in requests of INSERT_ROWS."""
    for start in range(0, len(rows), INSERT_ROWS):
        client.upsert(name, rows[start : start + INSERT_ROWS])


def int_list(values: Iterable[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


class Meta:
    """The small shared records: which build is published, and the tombstones."""

    def __init__(self, target: MilvusTarget) -> None:
        self.target, self.client = target, target.client()
        self.meta, self.tombs = target.name("meta"), target.name("tombstones")
        key = [("key", "VARCHAR", {"is_primary": True, "max_length": 512})]
        ensure_collection(
            self.client, self.meta, [*key, ("value", "VARCHAR", {"max_length": 65535})], DUMMY_DIM
        )
        ensure_collection(self.client, self.tombs, [("id", "INT64", {"is_primary": True})], 2)

    def get(self, key: str) -> dict | None:
        rows = self.client.get(self.meta, ids=[key], output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def put(self, key: str, value: dict) -> None:
        row = {"key": key, "value": json.dumps(value), "vector": [0.0] * DUMMY_DIM}
        self.client.upsert(self.meta, [row])

    def drop(self, key: str) -> None:
        self.client.delete(self.meta, ids=[key])

    def tombstone(self, video_ids: Iterable[int]) -> None:
        rows = [{"id": int(v), "vector": [0.0] * DUMMY_DIM} for v in video_ids]
        insert(self.client, self.tombs, rows)

    def tombstoned(self, video_ids: Iterable[int]) -> set[int]:
        ids = sorted({int(v) for v in video_ids})
        if not ids:
            return set()
        return {r["id"] for r in self.client.get(self.tombs, ids=ids, output_fields=["id"])}

    def all_tombstones(self) -> set[int]:
        return {r["id"] for r in _query_all(self.client, self.tombs, "", ["id"])}


def _query_all(client, name: str, expr: str, fields: list[str], batch: int = 4096) -> list[dict]:
    """Every row matching ``expr`` (an iterator: Milvus caps one query's rows)."""
    it = client.query_iterator(name, batch_size=batch, filter=expr, output_fields=fields)
    rows: list[dict] = []
    try:
        while page := it.next():
            rows.extend(page)
    finally:
        it.close()
    return rows


class MilvusStore:
    """The level vectors of one build in Milvus (``index.vectors.VectorStore``): what
    ``FaissStore`` offers a search, from collections ``<prefix>_<build>_<level>``. Deletes are
    tombstones (kept for good, as in FAISS) and the vectors' removal, both at once."""

    def __init__(
        self, target: MilvusTarget, build: str, dim: int, factory: str = "Flat", ef: int = 128
    ) -> None:
        if factory not in INDEX_TYPES:
            raise VectorStoreError(
                f"Milvus mirrors the factories {sorted(INDEX_TYPES)}, not {factory!r}"
            )
        self.target, self.build, self.dim, self.factory = target, build, dim, factory
        self.index_type, self.ef_search = INDEX_TYPES[factory], ef
        self.client, self.meta = target.client(), Meta(target)
        fields = [
            ("id", "INT64", {"is_primary": True}),
            ("unit", "INT64", {}),
            ("video", "INT64", {}),
        ]
        for level in LEVELS:
            ensure_collection(
                self.client, self.collection(level), fields, dim, "IP", self.index_type
            )
        ensure_collection(self.client, self.collection("rows"), [*fields, *ROW_FIELDS], DUMMY_DIM)

    def collection(self, level: str) -> str:
        if level not in (*LEVELS, "rows"):
            raise VectorStoreError(f"unknown level {level!r}; levels: {LEVELS}")
        return self.target.name(self.build, level)

    def add(
        self, video_id: int, vectors: dict[str, np.ndarray] | list[dict[str, np.ndarray]]
    ) -> None:
        """One video's vectors (as ``FaissStore.add``), replacing what it had: upserted by id,
        then its units past the new last one removed (a video re-cut into fewer segments)."""
        self.add_many({video_id: [vectors] if isinstance(vectors, dict) else vectors})

    def add_many(self, videos: dict[int, list[dict[str, np.ndarray]]]) -> None:
        """``add`` for several videos, one upsert per level."""
        for level in LEVELS:
            rows = []
            for video_id, units in videos.items():
                for segment, unit_vectors in enumerate(units):
                    if level in unit_vectors:
                        rows += self._rows(level, video_id, segment, unit_vectors[level])
            insert(self.client, self.collection(level), rows)
        self._drop_stale(videos)

    def _rows(self, level: str, video_id: int, segment: int, x: np.ndarray) -> list[dict]:
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        if x.shape[1] != self.dim:
            raise VectorStoreError(f"{level} vectors have dim {x.shape[1]}, not {self.dim}")
        unit = unit_id(video_id, segment)
        ids = vector_ids(unit, len(x)).tolist()
        pairs = zip(ids, x, strict=True)
        return [{"id": i, "unit": unit, "video": video_id, "vector": v} for i, v in pairs]

    def _drop_stale(self, videos: dict[int, list]) -> None:
        """Remove units past each video's last one (left by an earlier, longer indexing)."""
        for level in (*LEVELS, "rows"):
            expr = " or ".join(
                f"(video == {v} and unit > {unit_id(v, len(units) - 1)})"
                for v, units in videos.items()
            )
            if expr:
                self.client.delete(self.collection(level), filter=expr)

    def delete(self, video_ids: Iterable[int]) -> None:
        """Tombstone videos, then remove their vectors and payload (searches hide them at
        once; a writer that still held one removes it again after its write)."""
        ids = sorted({int(v) for v in video_ids})
        if ids:
            self.meta.tombstone(ids)
            self.remove(ids)
            self.flush()

    def remove(self, video_ids: list[int]) -> None:
        for level in (*LEVELS, "rows"):
            self.client.delete(self.collection(level), filter=f"video in {int_list(video_ids)}")

    def flush(self) -> None:
        """Seal and persist what was written (Milvus acknowledges a write once it is in its
        log; a flush also moves it out of the growing segment, which Milvus Lite searches by
        brute force in Python: measured an order of magnitude slower than a sealed one)."""
        for level in (*LEVELS, "rows"):
            self.client.flush(self.collection(level))

    @property
    def deleted(self) -> set[int]:
        return self.meta.all_tombstones()

    def search(self, level: str, queries: np.ndarray, k: int) -> list[list[VideoHit]]:
        """Top ``k`` videos per query at one level, each with its best vector's score."""
        return [
            [VideoHit(int(video_of(int(u))), float(s), int(g), int(u)) for u, s, g in hits]
            for hits in (zip(*row, strict=True) for row in self._top(level, queries, k, "video"))
        ]

    def top_videos(self, level: str, queries: np.ndarray, k: int) -> list[tuple]:
        return [(video_of(u), s, g) for u, s, g in self._top(level, queries, k, "video")]

    def top_units(self, level: str, queries: np.ndarray, k: int) -> list[tuple]:
        """Per query, the best ``k`` units: ids, best vectors' scores, key segment indexes."""
        return self._top(level, queries, k, "unit")

    def _top(self, level: str, queries: np.ndarray, k: int, group: str) -> list[tuple]:
        """A grouping search (each unit, or video, once at its best vector): exact with FLAT,
        where ``FaissStore`` over-fetches FETCH_PER_VIDEO vectors per wanted unit."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        params = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.ef_search, min(k, MAX_TOPK))}
        kwargs = {} if level == "event" and group == "unit" else {"group_by_field": group}
        result = self.client.search(
            self.collection(level),
            data=list(q),
            limit=max(1, min(k, MAX_TOPK)),
            search_params=params,
            consistency_level=STRONG,
            **kwargs,
        )
        return unit_hits(result)

    def count(self, level: str) -> int:
        rows = self.client.query(self.collection(level), filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def drop(self) -> None:
        """Drop this build's collections (a rebuild's failed or replaced build)."""
        names = [self.collection(level) for level in (*LEVELS, "rows")]
        for name in names:
            self.client.drop_collection(name)
        forget(self.client, names)


__all__ = ["FETCH_PER_VIDEO", "MilvusStore", "MilvusTarget", "Meta", "resolve", "use_milvus"]


def unit_hits(result) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A Milvus search result, per query: (unit ids, scores, segment slots), best first (ties
    in the order Milvus gave)."""
    out = []
    for row in result:
        ids = np.array([h["id"] for h in row], np.int64)
        scores = np.array([h["distance"] for h in row], np.float32)
        order = np.argsort(-scores, kind="stable")
        ids, scores = ids[order], scores[order]
        out.append((ids // SEGMENT_SLOTS, scores, ids % SEGMENT_SLOTS))
    return out
