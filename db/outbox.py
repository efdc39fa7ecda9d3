"""The webhook outbox: events written in the transaction that changes a video's status, and
claimed for delivery through a lease like the queue's.

An event row is added by ``db.queue`` when it marks a video indexed or failed on an engine made
by ``notifying`` (a worker configured with a webhook URL), in the same transaction: an event is
never lost (a crash before the commit loses the status change too, and the job is done again)
and never sent for a change that did not commit. Deliverers (the API process, an indexer
worker) claim due rows for ``lease_s``; a deliverer that dies leaves its rows to be claimed
again once the lease runs out, so delivery is at least once: receivers drop repeats by the
delivery id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.schema import DeliveryStatus, Video, WebhookDelivery

PENDING, DELIVERED = DeliveryStatus.PENDING.value, DeliveryStatus.DELIVERED.value
FAILED = DeliveryStatus.FAILED.value
EVENTS_OPTION = "hanet_webhook_events"  # an engine's execution option: write events


def notifying(engine: Engine) -> Engine:
    """``engine`` whose ``db.queue.complete`` and ``fail`` also write a webhook event."""
    return engine.execution_options(**{EVENTS_OPTION: True})


def writes_events(engine: Engine) -> bool:
    return bool(engine.get_execution_options().get(EVENTS_OPTION))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def add_event(session: Session, video_id: int) -> None:
    """Add the event of the video's new status (indexed or failed) in the caller's
    transaction; its payload is the video as the event describes it."""
    video = session.get(Video, video_id, populate_existing=True)
    event = f"video.{video.status}"
    now = _now()
    payload = {
        "event": event,
        "created_at": now.isoformat(),
        "video": {
            "id": video.id,
            "status": video.status,
            "title": video.title,
            "source_url": video.source_url,
            "duration_s": video.duration_s,
            "segments": video.segments,
            "failure_reason": video.failure_reason,
            "tags": video.tags or [],
            "metadata": video.meta or {},
        },
    }
    session.add(
        WebhookDelivery(
            event=event,
            video_id=video_id,
            payload=payload,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


@dataclass(frozen=True)
class Due:
    """A delivery a deliverer holds: its id (the receiver's key for dropping repeats), event,
    body and how many attempts were made before this one."""

    id: int
    event: str
    payload: dict
    attempts: int


def claim_due(
    engine: Engine,
    *,
    worker: str,
    limit: int = 20,
    lease_s: float = 60.0,
    now: datetime | None = None,
) -> list[Due]:
    """Take up to ``limit`` pending deliveries whose time has come and that no live lease
    holds, oldest first (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite serialises writers)."""
    now = now or _now()
    held = (WebhookDelivery.lease_expires_at.is_not(None)) & (
        WebhookDelivery.lease_expires_at >= now
    )
    claimable = (
        (WebhookDelivery.status == PENDING) & (WebhookDelivery.next_attempt_at <= now) & ~held
    )
    with Session(engine) as session, session.begin():
        query = (
            select(
                WebhookDelivery.id,
                WebhookDelivery.event,
                WebhookDelivery.payload,
                WebhookDelivery.attempts,
            )
            .where(claimable)
            .order_by(WebhookDelivery.id)
            .limit(limit)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        due = [Due(*row) for row in session.execute(query)]
        if due:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([d.id for d in due]), claimable)
                .values(claimed_by=worker, lease_expires_at=now + timedelta(seconds=lease_s))
            )
    return due


def record_attempt(
    engine: Engine,
    delivery_id: int,
    *,
    worker: str,
    delivered: bool,
    response_status: int | None,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """The outcome of one attempt by the deliverer holding the row: delivered, due again at
    ``retry_at``, or (no ``retry_at``) failed for good. False when the lease was lost."""
    now = _now()
    if delivered:
        status, values = DELIVERED, {"delivered_at": now, "last_error": None}
    else:
        status = PENDING if retry_at is not None else FAILED
        values = {"last_error": (error or "")[:2000], "next_attempt_at": retry_at or now}
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.claimed_by == worker,
                WebhookDelivery.status == PENDING,
            )
            .values(
                status=status,
                attempts=WebhookDelivery.attempts + 1,
                response_status=response_status,
                claimed_by=None,
                lease_expires_at=None,
                **values,
            )
        )
        return result.rowcount == 1


def deliveries(
    engine: Engine,
    *,
    video_id: int | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[WebhookDelivery], int]:
    """Deliveries newest first (optionally one video's, or in one state), and how many match."""
    where = []
    if video_id is not None:
        where.append(WebhookDelivery.video_id == video_id)
    if status is not None:
        where.append(WebhookDelivery.status == status)
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(WebhookDelivery).where(*where))
        rows = session.scalars(
            select(WebhookDelivery)
            .where(*where)
            .order_by(WebhookDelivery.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        session.expunge_all()
    return list(rows), total or 0
