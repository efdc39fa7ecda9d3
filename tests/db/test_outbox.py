"""The webhook outbox on SQLite and PostgreSQL: an event written with the status change and only
with it, leases so that two deliverers never hold one event, back-off and giving up; and the
queue's side of ingest by URL (a row without a file until the worker records its download)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from db import outbox, queue
from db.connect import make_engine
from db.schema import Video


def _due_now() -> datetime:
    """A moment just after the events written so far fell due (they are due when written, by
    the database's clock): the tests' "now", from which they step the clock by hand."""
    return datetime.now(timezone.utc) + timedelta(seconds=1)


def _claimed(engine, worker: str = "w", n: int = 1) -> list[int]:
    ids = [
        queue.enqueue(engine, media_path=f"v{i}.mp4", sha256=f"{i:064d}", title=f"t{i}")[0]
        for i in range(n)
    ]
    assert [c.video_id for c in queue.claim(engine, worker=worker, limit=n)] == ids
    return ids


def _complete(engine, video_id: int, worker: str = "w") -> bool:
    return queue.complete(
        engine,
        video_id,
        worker=worker,
        duration_s=2.0,
        checkpoint_sha256="c" * 64,
        concepts=None,
        segments=1,
    )


def test_events_are_written_with_the_status_change_only(db_url) -> None:
    plain = make_engine(db_url)
    engine = outbox.notifying(plain)
    first, second, third = _claimed(plain, n=3)
    assert _complete(plain, first)  # not a notifying engine: no event
    assert outbox.deliveries(plain) == ([], 0)
    assert _complete(engine, second)
    assert queue.fail(engine, third, worker="w", reason="cannot decode: junk")
    assert not _complete(engine, third)  # no longer held: no status change, no event
    rows, total = outbox.deliveries(plain)
    assert total == 2
    failed, indexed = rows  # newest first
    assert (indexed.event, indexed.video_id, indexed.status) == ("video.indexed", second, "pending")
    video = indexed.payload["video"]
    assert (video["id"], video["status"], video["title"]) == (second, "indexed", "t1")
    assert (video["duration_s"], video["segments"]) == (2.0, 1)
    assert failed.event == "video.failed"
    assert failed.payload["video"]["failure_reason"] == "cannot decode: junk"
    assert outbox.deliveries(plain, video_id=third)[1] == 1
    assert outbox.deliveries(plain, status="delivered")[1] == 0
    plain.dispose()


def test_a_claimed_event_is_not_taken_twice_until_its_lease_ends(db_url) -> None:
    engine = make_engine(db_url)
    [video_id] = _claimed(engine)
    assert _complete(outbox.notifying(engine), video_id)
    now = _due_now()
    [due] = outbox.claim_due(engine, worker="a", lease_s=60, now=now)
    assert due.event == "video.indexed" and due.attempts == 0
    assert outbox.claim_due(engine, worker="b", lease_s=60, now=now + timedelta(seconds=59)) == []
    # "a" died: its lease runs out and "b" takes the event; "a" can no longer record it
    [again] = outbox.claim_due(engine, worker="b", lease_s=60, now=now + timedelta(seconds=61))
    assert again.id == due.id
    assert not outbox.record_attempt(
        engine, due.id, worker="a", delivered=True, response_status=200
    )
    assert outbox.record_attempt(engine, due.id, worker="b", delivered=True, response_status=204)
    [row], _ = outbox.deliveries(engine)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 1, 204)
    assert row.delivered_at is not None and row.claimed_by is None
    assert outbox.claim_due(engine, worker="c", now=now + timedelta(days=1)) == []
    engine.dispose()


def test_a_failed_attempt_waits_for_its_retry_then_gives_up(db_url) -> None:
    engine = make_engine(db_url)
    [video_id] = _claimed(engine)
    assert _complete(outbox.notifying(engine), video_id)
    now = _due_now()
    [due] = outbox.claim_due(engine, worker="a", now=now)
    retry_at = now + timedelta(seconds=30)
    assert outbox.record_attempt(
        engine,
        due.id,
        worker="a",
        delivered=False,
        response_status=503,
        error="HTTP 503",
        retry_at=retry_at,
    )
    assert outbox.claim_due(engine, worker="a", now=now + timedelta(seconds=29)) == []
    [due] = outbox.claim_due(engine, worker="a", now=retry_at)
    assert due.attempts == 1
    assert outbox.record_attempt(
        engine, due.id, worker="a", delivered=False, response_status=None, error="refused"
    )
    [row], _ = outbox.deliveries(engine)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "refused")
    assert outbox.claim_due(engine, worker="a", now=now + timedelta(days=9)) == []
    engine.dispose()


def test_concurrent_deliverers_share_the_events_without_overlap(db_url) -> None:
    engine = make_engine(db_url)
    ids = _claimed(engine, n=30)
    notifying = outbox.notifying(engine)
    for video_id in ids:
        assert _complete(notifying, video_id)
    taken: dict[str, list[int]] = {"a": [], "b": []}
    now = _due_now()

    def deliver(name: str) -> None:
        own = make_engine(db_url)
        while batch := outbox.claim_due(own, worker=name, limit=4, now=now):
            for due in batch:
                taken[name].append(due.id)
                assert outbox.record_attempt(
                    own, due.id, worker=name, delivered=True, response_status=200
                )
        own.dispose()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = taken["a"] + taken["b"]
    assert len(both) == 30 and len(set(both)) == 30
    assert outbox.deliveries(engine, status="delivered")[1] == 30
    engine.dispose()


def test_a_url_ingest_has_no_file_until_its_download_is_recorded(db_url) -> None:
    engine = outbox.notifying(make_engine(db_url))
    url = "https://media.example.com/a.mp4"
    video_id, created = queue.enqueue_url(engine, url, title="a", tags=["x"], meta={"k": "v"})
    assert created and queue.enqueue_url(engine, url) == (video_id, False)
    known, _ = queue.enqueue(engine, media_path="b.mp4", sha256="b" * 64)
    [claim, other] = queue.claim(engine, worker="w", limit=2)
    assert (claim.video_id, claim.source_url, claim.media_path) == (video_id, url, "")
    assert other.source_url is None  # a file already there
    assert (
        queue.fetched(
            engine,
            video_id,
            worker="w",
            media_path="/m/b.mp4",
            sha256="b" * 64,
            media_type="video/mp4",
        )
        == known
    )  # the same content as video `known`: not recorded
    assert (
        queue.fetched(
            engine,
            video_id,
            worker="w",
            media_path="/m/a.mp4",
            sha256="a" * 64,
            media_type="video/mp4",
        )
        is None
    )
    assert queue.renew_all(engine, worker="w", lease_s=60) == 2
    assert queue.fail(engine, video_id, worker="w", reason="later failure")
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        row = session.get(Video, video_id)
        assert (row.content_sha256, row.media_path, row.tags, row.meta) == (
            "a" * 64,
            "/m/a.mp4",
            ["x"],
            {"k": "v"},
        )
    [event], _ = outbox.deliveries(engine)
    assert event.payload["video"]["source_url"] == url
    assert event.payload["video"]["tags"] == ["x"]
    # failed: the same URL again is a new ingest
    again, created = queue.enqueue_url(engine, url)
    assert created and again != video_id
    [retry] = queue.claim(engine, worker="w", limit=1)
    assert retry.source_url == url
    engine.dispose()
