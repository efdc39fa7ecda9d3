"""The indexing job queue, kept in the database the service shares.

Videos go pending -> processing -> indexed | failed. A worker claims a batch atomically
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so several workers never take the same video; SQLite
serialises writers), holds a lease it renews while working, and finishes each job only while it
still holds it. A worker killed at any point loses nothing: its lease runs out (or, on the same
host, its dead process is noticed at once) and the video is claimed again; the vector store
replaces a re-indexed video's vectors, so no duplicates arise.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, func, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import outbox
from db.schema import Video, VideoStatus

PENDING, PROCESSING = VideoStatus.PENDING.value, VideoStatus.PROCESSING.value
INDEXED, FAILED = VideoStatus.INDEXED.value, VideoStatus.FAILED.value


def _now() -> datetime:
    return datetime.now(timezone.utc)


def worker_name() -> str:
    """host:pid:random, so that a worker's own host can tell when its process has died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def enqueue(
    engine: Engine,
    *,
    media_path: str,
    sha256: str,
    title: str | None = None,
    media_type: str | None = None,
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Add a video by content hash, with its file's HTTP media type when known; the same content
    again returns the existing id (and gives that row the media type if it had none).
    Returns (video id, created)."""
    with Session(engine) as session:
        existing = session.scalar(select(Video.id).where(Video.content_sha256 == sha256))
        if existing is not None:
            _fill_media_type(session, existing, media_type)
            return existing, False
        video = Video(
            content_sha256=sha256,
            media_path=media_path,
            title=title,
            media_type=media_type,
            tags=tags,
            meta=meta,
        )
        session.add(video)
        try:
            session.commit()
        except IntegrityError:  # another process added the same content just now
            session.rollback()
            return session.scalar(select(Video.id).where(Video.content_sha256 == sha256)), False
        return video.id, True


def enqueue_url(
    engine: Engine,
    url: str,
    *,
    title: str | None = None,
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Add a video to be downloaded from ``url`` by the worker that claims it (no file nor
    content hash until then). The same URL while an earlier ingest of it has not failed
    returns that video. Returns (video id, created)."""
    with Session(engine) as session, session.begin():
        existing = session.scalar(
            select(Video.id)
            .where(Video.source_url == url, Video.status != FAILED)
            .order_by(Video.id)
            .limit(1)
        )
        if existing is not None:
            return existing, False
        video = Video(
            content_sha256=None, media_path="", source_url=url, title=title, tags=tags, meta=meta
        )
        session.add(video)
        session.flush()
        return video.id, True


def fetched(
    engine: Engine,
    video_id: int,
    *,
    worker: str,
    media_path: str,
    sha256: str,
    media_type: str,
) -> int | None:
    """Record the file a worker downloaded for a video ingested by URL, while it holds the job.
    Returns None when recorded, else the id of the video that already has this content (the
    row is left without a file: fail it)."""
    same = select(Video.id).where(Video.content_sha256 == sha256)
    try:
        with Session(engine) as session, session.begin():
            if (existing := session.scalar(same)) is not None:
                return existing
            session.execute(
                update(Video)
                .where(Video.id == video_id, Video.claimed_by == worker, Video.status == PROCESSING)
                .values(content_sha256=sha256, media_path=media_path, media_type=media_type)
            )
    except IntegrityError:  # another process stored the same content just now
        with Session(engine) as session:
            return session.scalar(same)
    return None


def _fill_media_type(session: Session, video_id: int, media_type: str | None) -> None:
    if media_type is None:
        return
    session.execute(
        update(Video)
        .where(Video.id == video_id, Video.media_type.is_(None))
        .values(media_type=media_type)
    )
    session.commit()


def set_media_type(engine: Engine, video_id: int, media_type: str) -> None:
    """Store the media type of a row that had none (one ingested before it was stored)."""
    with Session(engine) as session:
        _fill_media_type(session, video_id, media_type)


@dataclass(frozen=True)
class Claim:
    """A job a worker took: the video and where its media file is; ``source_url`` for a video
    ingested by URL that is still to be downloaded (``media_path`` is empty until then)."""

    video_id: int
    media_path: str
    source_url: str | None = None


def claim(engine: Engine, *, worker: str, limit: int, lease_s: float = 60.0) -> list[Claim]:
    """Take up to ``limit`` jobs, oldest first: pending ones, and processing ones whose lease
    ran out. One transaction returns them with their media paths."""
    now = _now()
    claimable = (Video.status == PENDING) | (
        (Video.status == PROCESSING) & (Video.lease_expires_at < now)
    )
    with Session(engine) as session, session.begin():
        query = (
            select(Video.id, Video.media_path, Video.source_url, Video.content_sha256)
            .where(claimable)
            .order_by(Video.id)
            .limit(limit)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claims = [
            Claim(video_id, path, url if sha is None else None)
            for video_id, path, url, sha in session.execute(query)
        ]
        if claims:
            session.execute(
                update(Video)
                .where(Video.id.in_([c.video_id for c in claims]), claimable)
                .values(
                    status=PROCESSING,
                    claimed_by=worker,
                    indexed_s=None,  # a job taken over starts again from the beginning
                    attempts=Video.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                )
            )
    return claims


def renew(engine: Engine, *, worker: str, ids: list[int], lease_s: float = 60.0) -> int:
    """Extend the lease on jobs this worker still holds; returns how many it holds."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Video)
            .where(Video.id.in_(ids), Video.claimed_by == worker, Video.status == PROCESSING)
            .values(lease_expires_at=_now() + timedelta(seconds=lease_s))
        )
        return result.rowcount


def renew_all(engine: Engine, *, worker: str, lease_s: float = 60.0) -> int:
    """Extend the lease on every job this worker holds (during a long download, which holds
    up the batches around it); returns how many it holds."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Video)
            .where(Video.claimed_by == worker, Video.status == PROCESSING)
            .values(lease_expires_at=_now() + timedelta(seconds=lease_s))
        )
        return result.rowcount


def _finish(engine: Engine, video_id: int, worker: str, **values) -> bool:
    """End a job this worker holds; on a ``db.outbox.notifying`` engine, its webhook event is
    written in the same transaction."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Video)
            .where(Video.id == video_id, Video.claimed_by == worker, Video.status == PROCESSING)
            .values(claimed_by=None, lease_expires_at=None, **values)
        )
        if result.rowcount == 1 and outbox.writes_events(engine):
            outbox.add_event(session, video_id)
        return result.rowcount == 1


def progress(
    engine: Engine, video_id: int, *, worker: str, indexed_s: float, duration_s: float
) -> bool:
    """Record how far into a video this worker has read (and its duration as known so far),
    while it holds the job: GET /videos/{id} shows it as progress."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Video)
            .where(Video.id == video_id, Video.claimed_by == worker, Video.status == PROCESSING)
            .values(indexed_s=indexed_s, duration_s=duration_s)
        )
        return result.rowcount == 1


def complete(
    engine: Engine,
    video_id: int,
    *,
    worker: str,
    duration_s: float,
    checkpoint_sha256: str,
    concepts: dict | None,
    segments: int = 1,
) -> bool:
    """Mark indexed, with the video's duration, its number of segments (index units), the
    checkpoint that embedded it and its concepts (``{"actions": [{"name", "probability"}],
    "entities": [...]}``, None for a model without a concept vocabulary), only if this worker
    still holds the job (else another took it over)."""
    return _finish(
        engine,
        video_id,
        worker,
        status=INDEXED,
        segments=segments,
        indexed_s=duration_s,
        duration_s=duration_s,
        checkpoint_sha256=checkpoint_sha256,
        concepts=null() if concepts is None else concepts,  # SQL NULL, not JSON null
        indexed_at=_now(),
        failure_reason=None,
    )


def fail(engine: Engine, video_id: int, *, worker: str, reason: str) -> bool:
    return _finish(engine, video_id, worker, status=FAILED, failure_reason=reason[:2000])


def release(engine: Engine, *, worker: str, ids: list[int]) -> int:
    """Give jobs this worker holds back to the queue unfinished (it was asked to stop), so that
    another worker takes them at once rather than when the lease runs out."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Video)
            .where(Video.id.in_(ids), Video.claimed_by == worker, Video.status == PROCESSING)
            .values(status=PENDING, claimed_by=None, lease_expires_at=None)
        )
        return result.rowcount


def release_dead_workers(engine: Engine) -> int:
    """Return to pending the jobs held by processes of this host that no longer exist (a
    worker killed with kill -9), without waiting for their leases to run out."""
    host = socket.gethostname()
    with Session(engine) as session, session.begin():
        rows = session.execute(
            select(Video.id, Video.claimed_by).where(
                Video.status == PROCESSING, Video.claimed_by.like(f"{host}:%")
            )
        ).all()
        dead = [vid for vid, owner in rows if dead_here(owner)]
        if dead:
            session.execute(
                update(Video)
                .where(Video.id.in_(dead))
                .values(status=PENDING, claimed_by=None, lease_expires_at=None)
            )
    return len(dead)


def dead_here(owner: str) -> bool:
    """Whether a worker name (``worker_name``) is a process of this host that has died."""
    host, pid = owner.split(":")[:2]
    return host == socket.gethostname() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.execute(select(Video.status, func.count()).group_by(Video.status)).all()
    out = {s.value: 0 for s in VideoStatus}
    out.update({status: n for status, n in rows})
    return out
