"""A rebuild's work list (``rebuild_videos``): the videos to re-encode, each pending ->
processing -> done | failed. One process holds the rebuild (``db.rebuilds``), so items need no
lease of their own: they carry their holder's name, and the holder that takes over a killed
rebuild hands the dead one's processing items back. Items of videos deleted meanwhile are never
claimed or counted (every read joins the videos that exist)."""

from __future__ import annotations

from sqlalchemy import Engine, and_, exists, insert, select, update
from sqlalchemy.orm import Session

from db.queue import Claim
from db.schema import RebuildVideo, Video, VideoStatus


def add_indexed(engine: Engine, rebuild_id: int) -> int:
    """Put on the work list the videos indexed since it was made (uploads indexed into the live
    build meanwhile); returns how many."""
    listed = exists().where(
        RebuildVideo.rebuild_id == rebuild_id, RebuildVideo.video_id == Video.id
    )
    with Session(engine) as session, session.begin():
        new = list(
            session.scalars(
                select(Video.id).where(Video.status == VideoStatus.INDEXED.value, ~listed)
            )
        )
        if new:
            rows = [{"rebuild_id": rebuild_id, "video_id": v, "status": "pending"} for v in new]
            session.execute(insert(RebuildVideo), rows)
        return len(new)


def requeue(engine: Engine, rebuild_id: int, video_ids: list[int]) -> None:
    """Put these videos (back) on the work list as pending."""
    with Session(engine) as session, session.begin():
        listed = set(
            session.scalars(
                select(RebuildVideo.video_id).where(
                    RebuildVideo.rebuild_id == rebuild_id, RebuildVideo.video_id.in_(video_ids)
                )
            )
        )
        session.execute(
            update(RebuildVideo)
            .where(RebuildVideo.rebuild_id == rebuild_id, RebuildVideo.video_id.in_(listed))
            .values(status="pending", claimed_by=None, error=None)
        )
        new = [{"rebuild_id": rebuild_id, "video_id": v, "status": "pending"} for v in video_ids]
        new = [row for row in new if row["video_id"] not in listed]
        if new:
            session.execute(insert(RebuildVideo), new)


def claim(engine: Engine, rebuild_id: int, *, worker: str, limit: int) -> list[Claim]:
    """Take up to ``limit`` pending items of videos that still exist, lowest id first."""
    pending = and_(RebuildVideo.rebuild_id == rebuild_id, RebuildVideo.status == "pending")
    with Session(engine) as session, session.begin():
        query = (
            select(Video.id, Video.media_path)
            .join(RebuildVideo, RebuildVideo.video_id == Video.id)
            .where(pending)
            .order_by(Video.id)
            .limit(limit)
        )
        claims = [Claim(video_id, path) for video_id, path in session.execute(query)]
        if claims:
            session.execute(
                update(RebuildVideo)
                .where(pending, RebuildVideo.video_id.in_([c.video_id for c in claims]))
                .values(status="processing", claimed_by=worker)
            )
    return claims


def _finish_items(
    engine: Engine, rebuild_id: int, worker: str, video_ids: list[int], **values
) -> list[int]:
    """Set items this worker holds; returns the ids it still held."""
    held = and_(
        RebuildVideo.rebuild_id == rebuild_id,
        RebuildVideo.video_id.in_(video_ids),
        RebuildVideo.claimed_by == worker,
        RebuildVideo.status == "processing",
    )
    with Session(engine) as session, session.begin():
        ids = list(session.scalars(select(RebuildVideo.video_id).where(held)))
        if ids:
            session.execute(update(RebuildVideo).where(held).values(claimed_by=None, **values))
    return ids


def done(
    engine: Engine,
    rebuild_id: int,
    *,
    worker: str,
    video_ids: list[int],
    segments: dict[int, int] | None = None,
) -> list[int]:
    """Mark items done (their videos are in the new build, with ``segments[video_id]`` units
    each: their rows' count once it is swapped in)."""
    if segments is None:
        return _finish_items(engine, rebuild_id, worker, video_ids, status="done")
    by_count: dict[int, list[int]] = {}  # one update per distinct count
    for video_id in video_ids:
        by_count.setdefault(segments[video_id], []).append(video_id)
    return [
        video_id
        for n, ids in by_count.items()
        for video_id in _finish_items(engine, rebuild_id, worker, ids, status="done", segments=n)
    ]


def fail(engine: Engine, rebuild_id: int, *, worker: str, video_id: int, reason: str) -> bool:
    """Mark an item failed (the new model could not read it), with the reason."""
    return bool(
        _finish_items(engine, rebuild_id, worker, [video_id], status="failed", error=reason[:2000])
    )


def release(engine: Engine, rebuild_id: int, *, worker: str, video_ids: list[int]) -> int:
    """Give items back to the work list unfinished (the rebuild was stopped)."""
    return len(_finish_items(engine, rebuild_id, worker, video_ids, status="pending"))


def failed_items(engine: Engine, rebuild_id: int) -> dict[int, str]:
    """Video id -> why the rebuild could not encode it, for the videos that still exist."""
    query = (
        select(RebuildVideo.video_id, RebuildVideo.error)
        .join(Video, Video.id == RebuildVideo.video_id)
        .where(RebuildVideo.rebuild_id == rebuild_id, RebuildVideo.status == "failed")
    )
    with Session(engine) as session:
        return {video_id: error or "" for video_id, error in session.execute(query)}


def requeue_all(engine: Engine, rebuild_id: int) -> None:
    """Every item pending again, failed ones too (the build under way was lost)."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(RebuildVideo)
            .where(RebuildVideo.rebuild_id == rebuild_id)
            .values(status="pending", claimed_by=None, error=None)
        )


def without_rows(engine: Engine, video_ids: set[int]) -> set[int]:
    """The videos among these whose rows are gone (deleted)."""
    with Session(engine) as session:
        return video_ids - set(session.scalars(select(Video.id)))
