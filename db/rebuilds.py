"""Rebuilds in the database: the one running rebuild, its lease and its work list.

A rebuild re-encodes every indexed video into a new build while the videos' rows stay indexed
and serve from the live build. At most one runs at a time (a partial unique index on the
running state); one process holds it through a lease on its row, renewed while it works, like
the queue's. A holder killed at any point loses nothing: ``start`` by another process takes the
rebuild over once the lease ran out (at once when the holder was a dead process of this host)
and hands the dead holder's unfinished items back to the work list. Items carry their holder's
name, so a holder that lost the rebuild can no longer mark anything done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, and_, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.queue import dead_here
from db.schema import Rebuild, RebuildState, RebuildVideo, Video, VideoStatus

RUNNING, DONE, FAILED = (s.value for s in RebuildState)
ITEM_STATES = ("pending", "processing", "done", "failed")


class RebuildError(Exception):
    """A rebuild that cannot start, go on or finish (the message says what to do)."""


class RebuildRunning(RebuildError):
    """Another process holds the running rebuild."""


class RebuildSwapping(RebuildError):
    """The rebuild began its swap: it can be finished, no longer cancelled."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RebuildInfo:
    """A rebuild's row and its work list's progress."""

    id: int
    checkpoint_sha256: str
    factory: str
    build: str | None
    state: str
    claimed_by: str | None
    lease_expires_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    items: dict[str, int]  # work-list items (of videos that still exist) per status
    swap_started_at: datetime | None = None  # when its holder began the swap

    @property
    def total(self) -> int:
        return sum(self.items.values())

    @property
    def finished_items(self) -> int:
        return self.items["done"] + self.items["failed"]

    def describe(self) -> str:
        holder = self.claimed_by or "nobody (stopped)"
        return (
            f"rebuild #{self.id} for checkpoint {self.checkpoint_sha256[:12]} "
            f"({self.finished_items}/{self.total} videos, held by {holder}, "
            f"started {self.started_at:%Y-%m-%d %H:%M:%S})"
        )

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        for key in ("lease_expires_at", "started_at", "finished_at", "swap_started_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return {**out, "done": self.finished_items, "total": self.total}


def _items(session: Session, rebuild_id: int) -> dict[str, int]:
    query = (
        select(RebuildVideo.status, func.count())
        .join(Video, Video.id == RebuildVideo.video_id)
        .where(RebuildVideo.rebuild_id == rebuild_id)
        .group_by(RebuildVideo.status)
    )
    return {s: 0 for s in ITEM_STATES} | {status: n for status, n in session.execute(query)}


def _info(session: Session, row: Rebuild) -> RebuildInfo:
    return RebuildInfo(
        row.id,
        row.checkpoint_sha256,
        row.factory,
        row.build,
        row.state,
        row.claimed_by,
        _aware(row.lease_expires_at),
        _aware(row.started_at),
        _aware(row.finished_at),
        row.error,
        _items(session, row.id),
        _aware(row.swap_started_at),
    )


def running(engine: Engine) -> RebuildInfo | None:
    """The running rebuild with its progress (None: none runs)."""
    with Session(engine) as session:
        row = session.scalar(select(Rebuild).where(Rebuild.state == RUNNING))
        return None if row is None else _info(session, row)


def get(engine: Engine, rebuild_id: int) -> RebuildInfo:
    with Session(engine) as session:
        return _info(session, session.get_one(Rebuild, rebuild_id))


def _holder_gone(row: Rebuild, now: datetime) -> bool:
    """Whether nobody holds the rebuild: stopped, lease run out, or a dead process here."""
    if row.claimed_by is None or row.lease_expires_at is None:
        return True
    if _aware(row.lease_expires_at) < now:
        return True
    return dead_here(row.claimed_by)


@dataclass(frozen=True)
class Started:
    """A rebuild this process now holds: a new one, or a running one it took over."""

    id: int
    resumed: bool
    build: str | None  # the new build's name, once it has one


def start(
    engine: Engine, *, worker: str, checkpoint_sha256: str, factory: str, lease_s: float
) -> Started:
    """Begin a rebuild whose work list is every indexed video, or resume the running one when
    its holder is gone. Raises RebuildRunning when a live process holds it, RebuildError when
    the running one is for another checkpoint."""
    for _ in range(3):  # a start that lost the race to another one looks again
        try:
            return _start_once(engine, worker, checkpoint_sha256, factory, lease_s)
        except IntegrityError:
            continue
    raise RebuildError("could not start a rebuild: another one keeps starting")


def _start_once(
    engine: Engine, worker: str, checkpoint_sha256: str, factory: str, lease_s: float
) -> Started:
    now = _now()
    with Session(engine) as session, session.begin():
        row = session.scalar(select(Rebuild).where(Rebuild.state == RUNNING).with_for_update())
        if row is None:
            return _create(session, worker, checkpoint_sha256, factory, now + _s(lease_s))
        info = _info(session, row)
        if not _holder_gone(row, now):
            raise RebuildRunning(
                f"a rebuild is already running: {info.describe()}; wait for it, or stop it "
                "and run `hanet index rebuild` again to resume it"
            )
        if row.checkpoint_sha256 != checkpoint_sha256:
            what = (  # a swap begun is finished, never cancelled
                "it began its swap: finish it with that checkpoint first"
                if row.swap_started_at is not None
                else "resume it with that checkpoint, or `hanet index rebuild --cancel` it first"
            )
            raise RebuildError(f"{info.describe()} was interrupted: {what}")
        row.claimed_by, row.lease_expires_at = worker, now + _s(lease_s)
        session.execute(  # the previous holder's unfinished items go back to the list
            update(RebuildVideo)
            .where(RebuildVideo.rebuild_id == row.id, RebuildVideo.status == "processing")
            .values(status="pending", claimed_by=None)
        )
        return Started(row.id, True, row.build)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _create(
    session: Session, worker: str, checkpoint_sha256: str, factory: str, lease_until: datetime
) -> Started:
    row = Rebuild(
        checkpoint_sha256=checkpoint_sha256,
        factory=factory,
        state=RUNNING,
        claimed_by=worker,
        lease_expires_at=lease_until,
    )
    session.add(row)
    session.flush()  # a second running rebuild fails here (uq_rebuilds_one_running)
    session.execute(
        insert(RebuildVideo).from_select(
            ["rebuild_id", "video_id", "status"],
            select(literal(row.id), Video.id, literal("pending")).where(
                Video.status == VideoStatus.INDEXED.value
            ),
        )
    )
    return Started(row.id, False, None)


def _held(rebuild_id: int, worker: str):
    return and_(Rebuild.id == rebuild_id, Rebuild.state == RUNNING, Rebuild.claimed_by == worker)


def renew(engine: Engine, rebuild_id: int, *, worker: str, lease_s: float) -> bool:
    """Extend this worker's lease on the rebuild; False when it no longer holds it."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Rebuild)
            .where(_held(rebuild_id, worker))
            .values(lease_expires_at=_now() + _s(lease_s))
        )
        return result.rowcount == 1


def set_build(engine: Engine, rebuild_id: int, *, worker: str, build: str) -> bool:
    """Record the name of the new build the rebuild writes."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Rebuild).where(_held(rebuild_id, worker)).values(build=build)
        )
        return result.rowcount == 1


def stop(engine: Engine, rebuild_id: int, *, worker: str) -> bool:
    """Let go of the rebuild, still running (asked to stop): the next start resumes it."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Rebuild)
            .where(_held(rebuild_id, worker))
            .values(claimed_by=None, lease_expires_at=None)
        )
        return result.rowcount == 1


def finish(engine: Engine, rebuild_id: int, *, worker: str, checkpoint_sha256: str) -> bool:
    """The new build swapped in: one transaction marks the rebuild done, the rows of videos it
    encoded with their new checkpoint, and the rows of videos it could not read failed (they
    are not in the new build). False when this worker no longer held the rebuild."""
    items = select(RebuildVideo.video_id).where(RebuildVideo.rebuild_id == rebuild_id)
    indexed = Video.status == VideoStatus.INDEXED.value
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Rebuild)
            .where(_held(rebuild_id, worker))
            .values(state=DONE, finished_at=_now(), claimed_by=None, lease_expires_at=None)
        )
        if result.rowcount != 1:
            return False
        session.execute(
            update(Video)
            .where(indexed, Video.id.in_(items.where(RebuildVideo.status == "done")))
            .values(
                checkpoint_sha256=checkpoint_sha256,
                segments=func.coalesce(  # items done before counts were kept: as they were
                    select(RebuildVideo.segments)
                    .where(RebuildVideo.rebuild_id == rebuild_id, RebuildVideo.video_id == Video.id)
                    .scalar_subquery(),
                    Video.segments,
                ),
            )
        )
        failed = items.where(RebuildVideo.status == "failed").add_columns(RebuildVideo.error)
        for video_id, error in session.execute(failed).all():
            session.execute(
                update(Video)
                .where(Video.id == video_id, indexed)
                .values(status=VideoStatus.FAILED.value, failure_reason=f"rebuild: {error}")
            )
        return True


def begin_swap(engine: Engine, rebuild_id: int, *, worker: str) -> bool:
    """Mark the held rebuild as swapping in its build, just before the swap: one conditional
    update, as ``cancel`` is, so that exactly one of them wins. From then on the rebuild can
    only be finished (by its holder, or by ``start`` resuming it). False when this worker no
    longer holds it (cancelled or taken over): it must not swap."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(Rebuild)
            .where(_held(rebuild_id, worker))
            .values(swap_started_at=func.coalesce(Rebuild.swap_started_at, _now()))
        )
        return result.rowcount == 1


def cancel(engine: Engine, reason: str = "cancelled") -> RebuildInfo | None:
    """End the running rebuild unfinished (its holder, if alive, stops at its next renewal);
    returns it, None when none ran. Raises RebuildSwapping when it began its swap (the update
    requires the swap mark unset, so a cancel and a swap never both happen)."""
    with Session(engine) as session, session.begin():
        row = session.scalar(select(Rebuild).where(Rebuild.state == RUNNING))
        if row is None:
            return None
        result = session.execute(
            update(Rebuild)
            .where(Rebuild.id == row.id, Rebuild.state == RUNNING)
            .where(Rebuild.swap_started_at.is_(None))
            .values(
                state=FAILED,
                finished_at=_now(),
                error=reason,
                claimed_by=None,
                lease_expires_at=None,
            )  # fmt: skip
        )
        session.expire(row)
        if result.rowcount == 1:
            return _info(session, row)
        if row.state != RUNNING:  # finished meanwhile
            return None
        raise RebuildSwapping(
            f"{_info(session, row).describe()} began swapping in its build at "
            f"{_aware(row.swap_started_at):%Y-%m-%d %H:%M:%S}: it can no longer be cancelled; "
            "if its holder is gone, `hanet index rebuild` with its checkpoint finishes it"
        )
