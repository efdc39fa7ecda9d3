"""Rebuilds in the database on SQLite and on PostgreSQL: one running at a time, its lease
(a killed holder's rebuild is resumed, the holder fenced), its work list."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import queue, rebuilds, worklist
from db.connect import make_engine
from db.rebuilds import RebuildError, RebuildRunning
from db.schema import Rebuild, Video

CKPT, OTHER = "c" * 64, "d" * 64


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _videos(engine, n: int, *, indexed: int) -> list[int]:
    """``n`` videos, the first ``indexed`` of them indexed (by worker "w")."""
    ids = [queue.enqueue(engine, media_path=f"v{i}.mp4", sha256=f"{i:064d}")[0] for i in range(n)]
    queue.claim(engine, worker="w", limit=indexed)
    for video_id in ids[:indexed]:
        queue.complete(
            engine, video_id, worker="w", duration_s=1.0, checkpoint_sha256=OTHER, concepts=None
        )
    return ids


def _start(engine, worker: str, checkpoint: str = CKPT, lease_s: float = 60.0):
    return rebuilds.start(
        engine, worker=worker, checkpoint_sha256=checkpoint, factory="Flat", lease_s=lease_s
    )


def _dead_worker() -> str:
    """The name a worker of this host had, whose process has exited."""
    proc = subprocess.run(
        [sys.executable, "-c", "from db.queue import worker_name; print(worker_name())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def test_the_work_list_is_the_indexed_videos_and_grows_with_new_ones(engine) -> None:
    ids = _videos(engine, 5, indexed=3)
    started = _start(engine, queue.worker_name())
    assert not started.resumed
    info = rebuilds.running(engine)
    assert info.id == started.id and info.items == {
        "pending": 3, "processing": 0, "done": 0, "failed": 0
    }  # fmt: skip
    queue.claim(engine, worker="w", limit=5)  # the pending two get indexed meanwhile
    for video_id in ids[3:]:
        queue.complete(
            engine, video_id, worker="w", duration_s=1.0, checkpoint_sha256=OTHER, concepts=None
        )
    assert worklist.add_indexed(engine, started.id) == 2
    assert worklist.add_indexed(engine, started.id) == 0
    assert rebuilds.running(engine).total == 5


def test_a_second_rebuild_is_refused_while_a_live_process_holds_one(engine) -> None:
    _videos(engine, 2, indexed=2)
    first = _start(engine, queue.worker_name())
    with pytest.raises(RebuildRunning, match=f"already running: rebuild #{first.id} .*0/2"):
        _start(engine, queue.worker_name())
    with Session(engine) as session:  # the database itself allows one running rebuild only
        session.add(Rebuild(checkpoint_sha256=CKPT, factory="Flat", state="running"))
        with pytest.raises(IntegrityError):
            session.commit()
    with Session(engine) as session:  # finished ones are history: any number of them
        session.add(Rebuild(checkpoint_sha256=CKPT, factory="Flat", state="done"))
        session.add(Rebuild(checkpoint_sha256=CKPT, factory="Flat", state="failed"))
        session.commit()


def test_a_dead_holder_s_rebuild_is_resumed_and_the_holder_fenced(engine) -> None:
    _videos(engine, 4, indexed=4)
    dead = _dead_worker()
    first = _start(engine, dead)
    claims = worklist.claim(engine, first.id, worker=dead, limit=2)
    assert worklist.done(engine, first.id, worker=dead, video_ids=[claims[0].video_id])
    me = queue.worker_name()
    again = _start(engine, me)  # the holder's process is gone: at once, no lease to wait for
    assert again.id == first.id and again.resumed
    assert rebuilds.running(engine).items == {
        "pending": 3, "processing": 0, "done": 1, "failed": 0
    }  # fmt: skip
    assert worklist.done(engine, first.id, worker=dead, video_ids=[claims[1].video_id]) == []
    assert not rebuilds.renew(engine, first.id, worker=dead, lease_s=60)
    assert rebuilds.renew(engine, first.id, worker=me, lease_s=60)


def test_another_host_s_rebuild_is_resumed_once_its_lease_ran_out(engine) -> None:
    _videos(engine, 2, indexed=2)
    elsewhere = "elsewhere:1:abcd"
    first = _start(engine, elsewhere, lease_s=60)
    with pytest.raises(RebuildRunning):
        _start(engine, queue.worker_name())
    assert rebuilds.renew(engine, first.id, worker=elsewhere, lease_s=-1)  # ran out
    assert _start(engine, queue.worker_name()).id == first.id


def test_a_stopped_rebuild_resumes_at_once_with_its_checkpoint_only(engine) -> None:
    _videos(engine, 2, indexed=2)
    me = queue.worker_name()
    first = _start(engine, me)
    assert rebuilds.stop(engine, first.id, worker=me)
    with pytest.raises(RebuildError, match="--cancel"):
        _start(engine, me, checkpoint=OTHER)
    assert _start(engine, me).resumed
    cancelled = rebuilds.cancel(engine)
    assert cancelled.id == first.id and rebuilds.running(engine) is None
    assert not rebuilds.renew(engine, first.id, worker=me, lease_s=60)
    assert _start(engine, me, checkpoint=OTHER).id != first.id


def test_deleted_videos_leave_the_work_list(engine) -> None:
    ids = _videos(engine, 3, indexed=3)
    started = _start(engine, queue.worker_name())
    with Session(engine) as session, session.begin():
        session.query(Video).filter(Video.id == ids[0]).delete()
    assert rebuilds.running(engine).total == 2
    claims = worklist.claim(engine, started.id, worker=queue.worker_name(), limit=5)
    assert [c.video_id for c in claims] == ids[1:]
    assert worklist.without_rows(engine, set(ids)) == {ids[0]}


def test_finishing_marks_the_rows_of_what_the_rebuild_encoded_and_could_not(engine) -> None:
    ids = _videos(engine, 3, indexed=3)
    me = queue.worker_name()
    started = _start(engine, me)
    worklist.claim(engine, started.id, worker=me, limit=3)
    assert worklist.done(engine, started.id, worker=me, video_ids=ids[:2]) == ids[:2]
    assert worklist.fail(engine, started.id, worker=me, video_id=ids[2], reason="gone file")
    assert rebuilds.finish(engine, started.id, worker=me, checkpoint_sha256=CKPT)
    with Session(engine) as session:
        rows = {v.id: v for v in session.query(Video)}
    assert [rows[i].checkpoint_sha256 for i in ids[:2]] == [CKPT, CKPT]
    assert rows[ids[2]].status == "failed" and "gone file" in rows[ids[2]].failure_reason
    assert rebuilds.running(engine) is None
    assert rebuilds.get(engine, started.id).state == "done"
    assert not rebuilds.finish(engine, started.id, worker=me, checkpoint_sha256=CKPT)


def test_of_starts_at_once_one_wins_and_the_others_are_refused(engine) -> None:
    """The partial unique index lets one insert win; the others see the winner and are
    refused with its name rather than an IntegrityError."""
    _videos(engine, 3, indexed=3)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        own = make_engine(engine.url.render_as_string(hide_password=False))
        barrier.wait()
        try:
            results.append(_start(own, queue.worker_name()))
        except RebuildRunning as exc:
            results.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, rebuilds.Started)]
    assert len(won) == 1 and len(results) == 4
    assert all(f"rebuild #{won[0].id}" in str(r) for r in results if r is not won[0])
    assert rebuilds.running(engine).total == 3


def test_a_swap_begun_is_finished_never_cancelled(engine) -> None:
    _videos(engine, 2, indexed=2)
    me = queue.worker_name()
    first = _start(engine, me)
    assert rebuilds.begin_swap(engine, first.id, worker=me)
    with pytest.raises(rebuilds.RebuildSwapping, match="can no longer be cancelled"):
        rebuilds.cancel(engine)
    assert rebuilds.running(engine).swap_started_at is not None
    assert rebuilds.stop(engine, first.id, worker=me)  # killed mid-swap, say
    with pytest.raises(RebuildError, match="began its swap: finish it"):
        _start(engine, me, checkpoint=OTHER)
    resumed = _start(engine, me)
    assert resumed.id == first.id and resumed.resumed
    assert rebuilds.finish(engine, first.id, worker=me, checkpoint_sha256=CKPT)
    assert rebuilds.get(engine, first.id).state == "done" and rebuilds.cancel(engine) is None

    second = _start(engine, me)  # cancelled first: its holder may not swap then
    assert rebuilds.cancel(engine).id == second.id
    assert not rebuilds.begin_swap(engine, second.id, worker=me)


def _race(engine, rebuild_id: int, worker: str) -> dict[str, bool]:
    """The swap mark and a cancel started at once from two threads: which of them happened."""
    barrier, result = threading.Barrier(2), {}

    def swap() -> None:
        barrier.wait()
        result["swap"] = rebuilds.begin_swap(engine, rebuild_id, worker=worker)

    def cancel() -> None:
        barrier.wait()
        try:
            result["cancel"] = rebuilds.cancel(engine) is not None
        except rebuilds.RebuildSwapping:
            result["cancel"] = False

    threads = [threading.Thread(target=swap), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def test_a_cancel_racing_a_swap_loses_or_wins_whole(engine) -> None:
    """The swap mark and the cancel, started together many times: each time exactly one of
    them happened, and the rebuild's row says which."""
    _videos(engine, 1, indexed=1)
    me = queue.worker_name()
    for _ in range(12):
        started = _start(engine, me)
        result = _race(engine, started.id, me)
        assert result["swap"] != result["cancel"], result
        info = rebuilds.get(engine, started.id)
        if result["swap"]:
            assert info.state == "running" and info.swap_started_at is not None
            assert rebuilds.finish(engine, started.id, worker=me, checkpoint_sha256=CKPT)
        else:
            assert info.state == "failed" and info.swap_started_at is None
    assert rebuilds.running(engine) is None
