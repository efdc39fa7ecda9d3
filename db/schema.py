"""The database schema, owned here and shared by the indexer and the service.

Framework-free (SQLAlchemy only) so that both sides, and Alembic, import one definition.
The schema itself is created and changed only by the migrations in ``migrations/``.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class VideoStatus(str, enum.Enum):
    """A video's place in the indexing queue: pending -> processing -> indexed | failed."""

    PENDING = "pending"
    PROCESSING = "processing"
    INDEXED = "indexed"
    FAILED = "failed"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Video(Base):
    """One ingested video file and its indexing state."""

    __tablename__ = "videos"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'indexed', 'failed')", name="ck_videos_status"
        ),
        UniqueConstraint("content_sha256", name="uq_videos_content_sha256"),
        # SQLite would give a deleted newest video's id to the next one; this never does
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # None only for a video ingested by URL that the worker has not downloaded yet
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where the media file is; empty for a video ingested by URL until it is downloaded.
    media_path: Mapped[str] = mapped_column(Text, nullable=False)
    # The http(s) URL a video was ingested from (None: uploaded or ingested by path).
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Free labels and key/value metadata given at ingest or by PATCH /videos/{id}.
    tags: Mapped[list | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=VideoStatus.PENDING.value, index=True
    )
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    # The HTTP media type of the file, from its probed container ("video/mp4"), set at ingest;
    # None on rows ingested before it was stored (the file route probes those once).
    media_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Queue bookkeeping: who holds the job and until when (a dead worker's lease runs out).
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The model's most probable actions and entities, {"actions": [{"name", "probability"}],
    # "entities": [...]}, written with the indexed status (None without a concept vocabulary).
    concepts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # While processing: how far into the video the indexer has read, seconds (progress);
    # once indexed: how many index units (segments) the video has.
    indexed_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    segments: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow, onupdate=_utcnow
    )


# A video's metadata values longer than this (UTF-8 bytes) have no label row (index key size)
LABEL_MAX_BYTES = 512


class VideoLabel(Base):
    """One tag (``key`` "") or metadata pair of a video, for search filters: written by
    database triggers from ``Video.tags`` and ``Video.meta`` (migration 0009), never by code."""

    __tablename__ = "video_labels"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(1000), primary_key=True)
    video_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, index=True
    )


class RebuildState(str, enum.Enum):
    """A rebuild's life: running (at most one at a time) -> done | failed."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Rebuild(Base):
    """One re-encoding of every indexed video into a new build (``hanet index rebuild``), held
    by one process at a time through a lease like the queue's (a killed one is resumed)."""

    __tablename__ = "rebuilds"
    __table_args__ = (
        CheckConstraint("state IN ('running', 'done', 'failed')", name="ck_rebuilds_state"),
        # at most one running rebuild: a second start fails in the database, not in a race
        Index(
            "uq_rebuilds_one_running",
            "state",
            unique=True,
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    factory: Mapped[str] = mapped_column(String(200), nullable=False)
    build: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the new build's name
    state: Mapped[str] = mapped_column(
        String(16), nullable=False, default=RebuildState.RUNNING.value
    )
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # set when its holder began the swap: from then on it can be finished, never cancelled
    swap_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RebuildVideo(Base):
    """A rebuild's work list: one row per video to re-encode. No foreign key to ``videos``: a
    deleted video's item is simply never claimed (claims join the videos that exist)."""

    __tablename__ = "rebuild_videos"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'failed')",
            name="ck_rebuild_videos_status",
        ),
        Index("ix_rebuild_videos_status", "rebuild_id", "status"),
    )

    rebuild_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("rebuilds.id", ondelete="CASCADE"), primary_key=True
    )
    video_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # done: the video's units in the new build (its row's ``segments`` once swapped in)
    segments: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DeliveryStatus(str, enum.Enum):
    """A webhook delivery's life: pending (due now or after a back-off) -> delivered | failed
    (given up after the last attempt)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """The webhook outbox: one event (a video indexed or failed) to POST to the configured URL,
    written in the transaction that changes the video's status, so that an event is never
    lost nor sent for a change that did not commit. Deliverers claim rows through a lease like
    the queue's. No foreign key to ``videos``: the event outlives a deleted video."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"
        ),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(32), nullable=False)  # video.indexed | video.failed
    video_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)  # the POSTed body's JSON
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=DeliveryStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow
    )
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MediaBlob(Base):
    """A video file kept in the database (``HANET_MEDIA_STORE=database``), so that every host
    reads it without a shared file system: its chunks are ``media_chunks`` rows. The row is
    written after the last chunk, so a file is visible only once complete."""

    __tablename__ = "media_blobs"

    content_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    chunks: Mapped[int] = mapped_column(Integer, nullable=False)
    stored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow
    )


class MediaChunk(Base):
    """One piece of a stored file, in order. No foreign key to ``media_blobs``: the chunks are
    written before the row that makes them visible."""

    __tablename__ = "media_chunks"

    content_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
