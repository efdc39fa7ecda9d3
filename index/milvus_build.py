"""A published build in Milvus, the read side: what ``index.reader.Build`` offers a search
(``service.search`` uses it unchanged), from the build's collections. Rerank payloads are read
per search for the candidates (a bounded cache keeps recent ones decoded); liveness is asked of
Milvus on every search, so deletes and new videos show at once, without a reload."""

from __future__ import annotations

import base64
import io
from collections import OrderedDict

import numpy as np
import torch

from index.milvus import (
    CHUNK_CHARS,
    PAYLOAD_CHUNKS,
    MilvusStore,
    _query_all,
)
from index.reader import FIELDS, GRAM_CHUNK, GRAM_FILES, HALF_FIELDS, BuildError
from index.vectors import LEVELS, UNIT_BITS, video_of
from model import VideoEmbeddings
from model.scores import unit_grams

CACHE_UNITS = 8192  # decoded payloads kept per build (a search's candidates, many times over)
QUERY_UNITS = 200  # units per payload query (all their chunks within Milvus's 16,384 rows)


def payload_rows(
    units: np.ndarray, video: VideoEmbeddings, frame_times: np.ndarray, spans: np.ndarray
) -> list[dict]:
    """The rows collection's rows of these units: each unit's rerank row as ``write_part``
    stores it (float fields in float16, the Gram matrices of the stored rows in float32, frame
    times, span), one ``np.savez`` in base64, cut into VARCHAR chunks."""
    stored = {}
    for name in FIELDS:
        array = getattr(video, name).detach().cpu().numpy()
        stored[name] = array.astype(np.float16) if array.dtype.kind == "f" else array
    as_stored = VideoEmbeddings(**{n: torch.from_numpy(a) for n, a in stored.items()})
    chunks = [
        unit_grams(as_stored.select(slice(i, i + GRAM_CHUNK)))
        for i in range(0, len(units), GRAM_CHUNK)
    ]
    grams = {f: torch.cat([c[n] for c in chunks]).numpy() for n, f in GRAM_FILES.items()}
    videos = video_of(np.asarray(units, np.int64))
    segments = dict(zip(*np.unique(videos, return_counts=True), strict=True))
    rows = []
    for i, unit in enumerate(np.asarray(units, np.int64).tolist()):
        arrays = {n: a[i] for n, a in {**stored, **grams}.items()}
        arrays["frame_times"] = np.asarray(frame_times[i], np.float32)
        arrays["spans"] = np.asarray(spans[i], np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        text = base64.b64encode(buf.getvalue()).decode("ascii")
        pieces = [text[j : j + CHUNK_CHARS] for j in range(0, len(text), CHUNK_CHARS)]
        if len(pieces) > PAYLOAD_CHUNKS:
            raise BuildError(f"a unit's rerank payload exceeds {PAYLOAD_CHUNKS} chunks")
        video_id = int(videos[i])
        rows += [
            {
                "id": unit * PAYLOAD_CHUNKS + c,
                "unit": unit,
                "video": video_id,
                "segments": int(segments[video_id]),
                "chunk": c,
                "chunks": len(pieces),
                "blob": piece,
                "vector": [0.0, 0.0],
            }
            for c, piece in enumerate(pieces)
        ]
    return rows


def _decode(pieces: list[str]) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode("".join(pieces)))) as data:
        return {name: data[name] for name in data.files}


class MilvusBuild:
    """The published build in Milvus, as a search sees it (``index.reader.Build``'s
    interface). Unit ids are ``index.vectors.unit_id(video, segment)``."""

    def __init__(self, manifest: dict, vectors: MilvusStore, most: int = 1) -> None:
        self.manifest, self.vectors = manifest, vectors
        self.client, self.rows_name = vectors.client, vectors.collection("rows")
        self._most = max(1, most)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    @property
    def checkpoint_sha256(self) -> str:
        return self.manifest["checkpoint_sha256"]

    @property
    def name(self) -> str:
        return f"{self.manifest['build']}/milvus"

    def most_units(self) -> int:
        """The most units one video has (refreshed by ``refresh``; never less than it was:
        an over-estimate only searches deeper)."""
        return self._most

    def refresh(self) -> None:
        """Look for videos with more units than the most known (one small query)."""
        while True:
            found = self.client.query(
                self.rows_name,
                filter=f"chunk == 0 and segments > {self._most}",
                output_fields=["segments"],
                limit=1,
            )
            if not found:
                return
            self._most = int(found[0]["segments"])

    def top_units(self, level: str, queries: np.ndarray, k: int) -> list[tuple]:
        return self.vectors.top_units(level, queries, k)

    def top_videos(self, level: str, queries: np.ndarray, k: int) -> list[tuple]:
        return self.vectors.top_videos(level, queries, k)

    def _live_units(self, expr: str) -> list[dict]:
        return _query_all(self.client, self.rows_name, f"chunk == 0 and ({expr})", ["unit"])

    def known(self, unit_ids: np.ndarray) -> np.ndarray:
        """(N,) bool: which units have payloads now (asked of Milvus on every call: deletes
        show at once); the payloads not in the cache are read with the same lookups, for the
        rerank that follows."""
        ids = np.asarray(unit_ids, np.int64).reshape(-1).tolist()
        cached = [u for u in dict.fromkeys(ids) if u in self._cache]
        live = set(self._get(cached, ["unit"])) if cached else set()
        live |= self._load([u for u in dict.fromkeys(ids) if u not in self._cache])
        return np.fromiter((u in live for u in ids), bool, len(ids))

    def _get(self, units: list[int], fields: list[str], chunk: int = 0) -> dict[int, dict]:
        """Payload rows of these units' ``chunk``, by primary key, per QUERY_UNITS units."""
        found: dict[int, dict] = {}
        for start in range(0, len(units), QUERY_UNITS):
            keys = [u * PAYLOAD_CHUNKS + chunk for u in units[start : start + QUERY_UNITS]]
            for row in self.client.get(self.rows_name, ids=keys, output_fields=fields):
                found[int(row["unit"])] = row
        return found

    def _load(self, unit_ids: list[int]) -> set[int]:
        """Read these units' payloads into the cache (primary-key lookups: the first chunk of
        each, then any further ones); returns the units found."""
        first = self._get(unit_ids, ["unit", "chunks", "blob"])
        pieces = {u: [row["blob"]] for u, row in first.items()}
        more = max((row["chunks"] for row in first.values()), default=1)
        for chunk in range(1, more):
            wanted = [u for u, row in first.items() if row["chunks"] > chunk]
            for u, row in self._get(wanted, ["unit", "blob"], chunk).items():
                pieces[u].append(row["blob"])
        for unit, blobs in pieces.items():
            if len(blobs) == first[unit]["chunks"]:  # a unit being rewritten: read it next time
                self._cache[unit] = _decode(blobs)
        for u in unit_ids:
            if u in self._cache:
                self._cache.move_to_end(u)
        while len(self._cache) > CACHE_UNITS:
            self._cache.popitem(last=False)
        return set(first)

    def _payloads(self, unit_ids: list[int]) -> list[dict[str, np.ndarray]]:
        self._load(unit_ids)
        missing = [u for u in unit_ids if u not in self._cache]
        if missing:
            raise BuildError(f"units not in this build: {missing[:5]}")
        return [self._cache[u] for u in unit_ids]

    def rerank_rows(self, unit_ids: list[int]) -> tuple[VideoEmbeddings, dict | None]:
        """``embeddings`` and ``grams`` of these units at once (a search's rerank)."""
        rows = self._payloads(unit_ids)
        return self._embeddings(rows), self._grams(rows)

    def embeddings(self, unit_ids: list[int]) -> VideoEmbeddings:
        return self._embeddings(self._payloads(unit_ids))

    def grams(self, unit_ids: list[int]) -> dict[str, torch.Tensor] | None:
        return self._grams(self._payloads(unit_ids))

    @staticmethod
    def _embeddings(rows: list[dict[str, np.ndarray]]) -> VideoEmbeddings:
        values = {}
        for name in FIELDS:
            tensor = torch.from_numpy(np.stack([r[name] for r in rows]))
            half = name in HALF_FIELDS or not tensor.is_floating_point()
            values[name] = tensor if half else tensor.float()
        return VideoEmbeddings(**values)

    @staticmethod
    def _grams(rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor] | None:
        if not rows:
            return None
        return {n: torch.from_numpy(np.stack([r[f] for r in rows])) for n, f in GRAM_FILES.items()}

    def frame_times(self, unit: int) -> np.ndarray:
        return self._payloads([unit])[0]["frame_times"]

    def span(self, unit: int) -> tuple[float, float]:
        start, end = self._payloads([unit])[0]["spans"].tolist()
        return start, end

    def units(self, video_id: int) -> list[int]:
        return sorted(r["unit"] for r in self._live_units(f"video == {int(video_id)}"))

    def video_ids(self) -> list[int]:
        return sorted({int(r["unit"]) >> UNIT_BITS for r in self._live_units("unit >= 0")})

    def __len__(self) -> int:
        """Live videos (a walk over the payloads' first chunks: for status, not searches)."""
        return len(self.video_ids())

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, int) and bool(self.units(video_id))

    def summary(self) -> dict:
        return {
            "name": self.name,
            "build": self.manifest["build"],
            "version": self.manifest.get("version", 1),
            "checkpoint_sha256": self.checkpoint_sha256,
            "factory": self.manifest.get("factory", self.vectors.factory),
            "store": "milvus",
            "videos": len(self),
            "vectors": {level: self.vectors.count(level) for level in LEVELS},
            "deleted_pending_compaction": 0,  # Milvus removes deleted rows itself
        }

    def warm(self, rows: bool = True) -> int:
        """Nothing to read ahead: the server holds the collections in memory."""
        return 0

    def shares_rows(self, other: object) -> bool:
        return False
