"""Search filters: which videos a search may return (tags, metadata, duration, ingest date).

The database answers which indexed videos match, once per search; the candidate search then
looks among those videos only (a FAISS IDSelector over their vector ids, or a Milvus filter
expression ``video in [...]``), so a filter never shortens the list: the hits are the best
``top_k`` of the matching videos whenever that many match. Over-fetching (searching deeper,
then dropping) was measured against it: benchmarks/filter_latency.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Select, and_, cast, exists, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from db.schema import LABEL_MAX_BYTES, Video, VideoLabel, VideoStatus
from index.vectors import FaissStore


@dataclass(frozen=True)
class VideoFilter:
    """What a video must have to be found. ``tags_all``: every one of these tags;
    ``tags_any``: at least one of them; ``metadata``: these keys with exactly these values;
    durations in seconds and ingest times (``created_at``) as half-open ranges [min, max)
    where both are given (``duration_max_s`` inclusive)."""

    tags_all: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    duration_min_s: float | None = None
    duration_max_s: float | None = None
    ingested_after: datetime | None = None
    ingested_before: datetime | None = None

    def __bool__(self) -> bool:
        return any(v not in (None, ()) for v in self.__dict__.values())

    def key(self) -> str:
        """A stable text naming this filter (part of a search cursor's fingerprint)."""
        return repr(sorted((k, str(v)) for k, v in self.__dict__.items()))


def matching_videos(engine: Engine, where: VideoFilter) -> np.ndarray:
    """(N,) int64, ascending: the indexed videos that pass ``where``."""
    conditions = [Video.status == VideoStatus.INDEXED.value, *_conditions(engine, where)]
    with engine.connect() as conn:
        ids = conn.execute(select(Video.id).where(and_(*conditions)).order_by(Video.id))
        return np.fromiter(ids.scalars(), np.int64)


def _conditions(engine: Engine, where: VideoFilter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if where.duration_min_s is not None:
        out.append(Video.duration_s >= where.duration_min_s)
    if where.duration_max_s is not None:
        out.append(Video.duration_s <= where.duration_max_s)
    if where.ingested_after is not None:
        out.append(Video.created_at >= where.ingested_after)
    if where.ingested_before is not None:
        out.append(Video.created_at < where.ingested_before)
    for tag in where.tags_all:
        out.append(Video.id.in_(_labelled("", [tag])))
    if where.tags_any:
        out.append(Video.id.in_(_labelled("", where.tags_any)))
    for key, value in where.metadata:
        if len(value.encode()) <= LABEL_MAX_BYTES:
            out.append(Video.id.in_(_labelled(key, [value])))
        else:  # no label row (a value over LABEL_MAX_BYTES): the JSON itself, a scan
            out.append(_json_equals(engine, key, value))
    return out


def _labelled(key: str, values) -> Select:
    """The videos with a label ``key`` ("" for a tag) of one of ``values``: a look-up in
    ``video_labels``' primary key, which triggers keep equal to the JSON columns."""
    return select(VideoLabel.video_id).where(
        VideoLabel.key == key, VideoLabel.value.in_(list(values))
    )


def _json_equals(engine: Engine, key: str, value: str) -> ColumnElement[bool]:
    if engine.dialect.name == "postgresql":
        return cast(Video.meta, JSONB).contains({key: value})
    each = func.json_each(Video.meta).table_valued("key", "value")
    return exists(select(1).select_from(each).where(each.c.key == key, each.c.value == value))


def top_units(
    build, level: str, queries: np.ndarray, k: int, videos: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``Build.top_units`` (FAISS or Milvus build), among ``videos`` only when given."""
    if videos is None:
        return build.top_units(level, queries, k)
    if isinstance(build.vectors, FaissStore):
        return build.vectors.top_units(level, queries, k, videos)
    from index.milvus_index import top_units_among  # Milvus mode only: pymilvus on demand

    return top_units_among(build.vectors, level, queries, k, videos)
