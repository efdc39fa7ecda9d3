"""The job queue on SQLite and on PostgreSQL: claims, leases, crash recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from db import queue
from db.connect import make_engine
from db.queue import Claim

ROOT = Path(__file__).resolve().parents[2]


def _fill(engine, n: int) -> list[int]:
    return [queue.enqueue(engine, media_path=f"v{i}.mp4", sha256=f"{i:064d}")[0] for i in range(n)]


def _ids(claims: list[Claim]) -> list[int]:
    return [c.video_id for c in claims]


def test_enqueue_is_idempotent_by_content(db_url) -> None:
    engine = make_engine(db_url)
    first, created = queue.enqueue(engine, media_path="a.mp4", sha256="f" * 64, title="A")
    again, created_again = queue.enqueue(engine, media_path="copy.mp4", sha256="f" * 64)
    assert created and not created_again and first == again
    assert queue.counts(engine)["pending"] == 1


def test_two_workers_never_take_the_same_video(db_url) -> None:
    engine = make_engine(db_url)
    ids = _fill(engine, 40)
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def work(name: str) -> None:
        own_engine = make_engine(db_url)
        while batch := queue.claim(own_engine, worker=name, limit=3):
            taken[name].extend(_ids(batch))
            for video_id in _ids(batch):
                assert queue.complete(
                    own_engine,
                    video_id,
                    worker=name,
                    duration_s=1.0,
                    checkpoint_sha256="c" * 64,
                    concepts=None,
                )
            time.sleep(0.001)
        own_engine.dispose()

    threads = [threading.Thread(target=work, args=(n,)) for n in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(taken["a"]) & set(taken["b"])
    assert sorted(taken["a"] + taken["b"]) == ids
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 40, "failed": 0}


def test_a_claim_carries_each_video_s_media_path(db_url) -> None:
    engine = make_engine(db_url)
    ids = _fill(engine, 4)
    claims = queue.claim(engine, worker="a", limit=3)
    assert claims == [Claim(ids[i], f"v{i}.mp4") for i in range(3)]  # oldest first
    assert queue.counts(engine)["processing"] == 3
    assert queue.claim(engine, worker="b", limit=3) == [Claim(ids[3], "v3.mp4")]


def test_complete_stores_the_concepts_on_the_row(db_url) -> None:
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from db.schema import Video

    engine = make_engine(db_url)
    with_vocab, without = _fill(engine, 2)
    queue.claim(engine, worker="a", limit=2)
    concepts = {
        "actions": [{"name": "jump", "probability": 0.75}, {"name": "run", "probability": 0.125}],
        "entities": [{"name": "dog", "probability": 0.5}],
    }
    assert queue.complete(
        engine,
        with_vocab,
        worker="a",
        duration_s=3.5,
        checkpoint_sha256="c" * 64,
        concepts=concepts,
    )
    assert queue.complete(
        engine, without, worker="a", duration_s=2.0, checkpoint_sha256="c" * 64, concepts=None
    )
    with Session(engine) as session:
        first, second = session.get(Video, with_vocab), session.get(Video, without)
        assert first.concepts == concepts and first.status == "indexed"
        assert first.duration_s == 3.5 and first.checkpoint_sha256 == "c" * 64
        assert second.concepts is None and second.status == "indexed"
        # without a vocabulary the column is SQL NULL, not the JSON text null
        nulls = session.execute(text("SELECT id FROM videos WHERE concepts IS NULL")).all()
        assert [row[0] for row in nulls] == [without]


def test_expired_lease_is_taken_over_and_the_old_worker_is_fenced(db_url) -> None:
    engine = make_engine(db_url)
    (video_id,) = _fill(engine, 1)
    assert queue.claim(engine, worker="slow", limit=5, lease_s=-1) == [Claim(video_id, "v0.mp4")]
    assert queue.claim(engine, worker="fast", limit=5) == [Claim(video_id, "v0.mp4")]
    assert not queue.complete(
        engine, video_id, worker="slow", duration_s=1, checkpoint_sha256="x", concepts=None
    )
    assert queue.fail(engine, video_id, worker="fast", reason="no video stream in the file")
    assert queue.counts(engine)["failed"] == 1


def test_a_killed_worker_loses_nothing(db_url) -> None:
    engine = make_engine(db_url)
    _fill(engine, 5)
    code = (
        "import sys, time\n"
        "from db import queue\nfrom db.connect import make_engine\n"
        "engine = make_engine(sys.argv[1])\n"
        "me = queue.worker_name()\n"
        "print(queue.claim(engine, worker=me, limit=3, lease_s=3600), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, db_url], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    held = proc.stdout.readline()
    assert held.startswith("[")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert queue.counts(engine)["processing"] == 3
    assert queue.release_dead_workers(engine) == 3
    me = queue.worker_name()
    claimed = queue.claim(engine, worker=me, limit=10)
    assert len(claimed) == 5
    for video_id in _ids(claimed):
        queue.complete(
            engine, video_id, worker=me, duration_s=2, checkpoint_sha256="c" * 64, concepts=None
        )
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 5, "failed": 0}


def test_a_stopping_worker_gives_back_only_its_own_jobs(db_url) -> None:
    engine = make_engine(db_url)
    first, second, _ = _fill(engine, 3)
    assert _ids(queue.claim(engine, worker="a", limit=1)) == [first]
    assert _ids(queue.claim(engine, worker="b", limit=1)) == [second]
    assert queue.release(engine, worker="a", ids=[first, second]) == 1
    assert queue.counts(engine) == {"pending": 2, "processing": 1, "indexed": 0, "failed": 0}
    assert _ids(queue.claim(engine, worker="c", limit=5)) == [first, 3]


def test_renewing_keeps_a_lease(db_url) -> None:
    engine = make_engine(db_url)
    (video_id,) = _fill(engine, 1)
    queue.claim(engine, worker="a", limit=1, lease_s=-1)  # as if the lease had run out
    assert queue.renew(engine, worker="a", ids=[video_id], lease_s=60) == 1
    assert queue.claim(engine, worker="b", limit=1) == []
    assert queue.renew(engine, worker="b", ids=[video_id]) == 0  # not b's to renew


def _titles(rows: dict) -> dict:
    return {video_id: row.title for video_id, row in rows.items()}


def test_search_hit_rows_never_wait_for_a_writer(db_url) -> None:
    """The search route's lookup of its hits' rows reads while another connection holds a write
    transaction open. On SQLite the readers' busy timeout is 0 here, so a lookup that asked for
    the write lock (BEGIN IMMEDIATE) would fail at once with "database is locked"."""
    from sqlalchemy import event, text

    from db.connect import HitRows, hit_rows

    engine = make_engine(db_url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _no_waiting(dbapi_conn, _record) -> None:  # after make_engine's own pragmas
            dbapi_conn.execute("PRAGMA busy_timeout=0")

    first, _ = queue.enqueue(engine, media_path="a.mp4", sha256="a" * 64, title="A")
    second, _ = queue.enqueue(engine, media_path="b.mp4", sha256="b" * 64, title=None)
    kept = HitRows(engine)  # the search thread's: one connection kept between lookups
    assert _titles(kept([first])) == {first: "A"}
    assert kept([first])[first].status == "pending" and kept([first])[first].concepts is None
    writer = make_engine(db_url)
    with writer.begin() as conn:  # a write in progress, not yet committed
        conn.execute(text("UPDATE videos SET title = 'changing' WHERE id = :i"), {"i": first})
        for lookup in (lambda ids: hit_rows(engine, ids), kept):
            found = lookup([first, second, 10**6])
            assert _titles(found) == {first: "A", second: None}  # the last commit, known ids
    # the kept connection holds no snapshot between lookups: it sees the commit
    assert _titles(kept([first])) == _titles(hit_rows(engine, [first])) == {first: "changing"}
    assert hit_rows(engine, []) == {} and kept([]) == {}
    # a connection that broke is replaced, and the lookup still answers
    broken = kept._conn
    assert broken is not None
    broken.connection.dbapi_connection.close()
    assert _titles(kept([second])) == {second: None}
    assert kept._conn is not None and kept._conn is not broken
    kept.close()
    writer.dispose()
    engine.dispose()
