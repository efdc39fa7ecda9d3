"""`hanet index rebuild` as a managed job: beside a serving worker and a stream of uploads and
deletes it loses nothing; one at a time; resumed after kill -9; a worker of the old checkpoint
cannot publish into the new build."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import migrations
from db import queue, rebuilds
from db.connect import make_engine
from db.rebuilds import RebuildRunning
from db.schema import Video
from index.reader import Build, BuildError, load_current
from index.vectors import unit_id
from indexer.job import IndexingCfg, run_indexing
from indexer.rebuild import run_rebuild, staging_dir
from indexer.segments import SegmentCfg
from indexer.writer import remove_videos
from model import HANet, create_model


def _cfg(**kw) -> IndexingCfg:
    return IndexingCfg(**{"decode_workers": 1, "batch_size": 4, "poll_s": 0.05, **kw})


class _Uploads:
    """New videos (the corpus's files, each time as new content), as the API's upload does."""

    def __init__(self, engine: Engine, corpus: Path) -> None:
        self.engine = engine
        self.files = sorted(p for p in corpus.iterdir() if p.name != "broken.mp4")
        self.n = 0

    def __call__(self, count: int = 1) -> list[int]:
        ids = []
        for _ in range(count):
            path = self.files[self.n % len(self.files)]
            sha = f"{self.n:064d}"
            ids.append(queue.enqueue(self.engine, media_path=str(path), sha256=sha)[0])
            self.n += 1
        return ids


def _new_model(tmp_path: Path) -> HANet:
    other = create_model("tiny")
    other.save(str(tmp_path / "new.pt"))
    return other


def _rows(engine: Engine, status: str) -> set[int]:
    with Session(engine) as session:
        return set(session.scalars(select(Video.id).where(Video.status == status)))


def _units(video_ids) -> np.ndarray:
    """The unit ids of these videos, one unit each (the corpus's 2 s videos)."""
    return np.array([unit_id(v, 0) for v in sorted(video_ids)], np.int64)


def _searchable(build: Build) -> set[int]:
    """Every video a search reaches (FAISS at the event level, tombstones honoured)."""
    query = np.ones((1, build.vectors.dim), np.float32)
    ids, _, _ = build.top_videos("event", query, k=10_000)[0]
    return set(ids.tolist())


def _in_thread(target, *args, **kwargs) -> tuple[threading.Thread, list]:
    """``target`` in a thread; the list gets its result, or the exception it raised."""
    out: list = []

    def run() -> None:
        try:
            out.append(target(*args, **kwargs))
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.slow
@pytest.mark.parametrize("switch", [True, False], ids=["new-checkpoint", "same-checkpoint"])
def test_a_rebuild_beside_a_serving_worker_uploads_and_deletes_loses_nothing(
    tmp_path, corpus, model, db_url, switch
) -> None:
    """The issue's scenario: a serving worker (the old checkpoint: a model switch; or the
    rebuild's own) indexes uploads into the live build while the rebuild runs and videos are
    deleted. Afterwards every indexed row's video is in the new build and searchable, every
    deleted one is gone, and the rows stayed indexed throughout."""
    engine, index = make_engine(db_url), tmp_path / "index"
    upload = _Uploads(engine, corpus)
    upload(96)
    run_indexing(engine, model, index, _cfg(), progress=False)
    before = _rows(engine, "indexed")
    assert len(before) == 96
    new = _new_model(tmp_path) if switch else model
    stop = threading.Event()
    serving, served = _in_thread(
        run_indexing, make_engine(db_url), model, index, _cfg(), watch=True, stop=stop,
        progress=False,
    )  # fmt: skip
    uploads, deleted, indexed_meanwhile = upload(), set(), 0
    deadline = time.monotonic() + 60
    while uploads[0] not in _rows(engine, "indexed") and time.monotonic() < deadline:
        time.sleep(0.02)  # the serving worker is up, with the live build open
    rebuilding, rebuilt = _in_thread(
        run_rebuild, make_engine(db_url), new, index, _cfg(), progress=False
    )
    pick = random.Random(0)
    while rebuilding.is_alive():  # the stream: an upload and a delete at a time
        uploads += upload()
        victim = pick.choice(sorted(_rows(engine, "indexed") - deleted))
        deleted.update(remove_videos(engine, index, [victim]))
        if rebuilds.running(engine) is not None:
            assert before - deleted <= _rows(engine, "indexed") | _rows(engine, "processing")
            indexed_meanwhile = len(_rows(engine, "indexed") & set(uploads[1:]))
        time.sleep(0.02)
    rebuilding.join()
    assert not isinstance(rebuilt[0], Exception), rebuilt
    assert indexed_meanwhile > 0 and len(deleted) > 1  # the stream really ran beside it
    last = upload()  # after the swap: the old checkpoint's worker gives it back and stops,
    deadline = time.monotonic() + 60  # the rebuild's own indexes it into the new build
    while not switch and last[0] not in _rows(engine, "indexed") and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    serving.join()
    if switch:
        assert isinstance(served[0], BuildError), served
        assert _rows(engine, "processing") == set() and last[0] in _rows(engine, "pending")
        run_indexing(engine, new, index, _cfg(), progress=False)  # the new checkpoint's worker
    else:
        assert not isinstance(served[0], Exception), served
    build = load_current(index, expect_checkpoint=new.checkpoint_sha256)
    indexed = _rows(engine, "indexed")
    assert indexed == before - deleted | (set(uploads + last) - deleted)
    assert set(build.video_ids()) == indexed and _searchable(build) == indexed
    assert not build.known(_units(deleted)).any() and build.known(_units(indexed)).all()
    assert rebuilds.running(engine) is None and not staging_dir(index).exists()


def test_a_worker_of_the_old_checkpoint_gives_its_jobs_back_after_the_swap(
    tmp_path, corpus, model, db_url
) -> None:
    engine, index = make_engine(db_url), tmp_path / "index"
    upload = _Uploads(engine, corpus)
    upload(6)
    stop = threading.Event()
    serving, served = _in_thread(
        run_indexing, make_engine(db_url), model, index, _cfg(), watch=True, stop=stop,
        progress=False,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(_rows(engine, "indexed")) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # the serving worker has the live build open
    new = _new_model(tmp_path)
    summary = run_rebuild(engine, new, index, _cfg(), progress=False)
    assert summary.indexed == 6 and not summary.failed
    late = upload(2)
    serving.join(timeout=60)
    stop.set()
    assert isinstance(served[0], BuildError) and "hanet index rebuild" in str(served[0])
    assert _rows(engine, "pending") == set(late)  # given back, neither failed nor held
    with Session(engine) as session:
        assert {v.claimed_by for v in session.query(Video).filter(Video.id.in_(late))} == {None}
    build = load_current(index, expect_checkpoint=new.checkpoint_sha256)
    assert not build.known(_units(late)).any() and build.known(_units(range(1, 7))).all()
    run_indexing(engine, new, index, _cfg(), progress=False)
    assert set(load_current(index).video_ids()) == _rows(engine, "indexed") == set(range(1, 9))


def test_a_rebuild_with_other_segment_settings_gives_the_rows_their_new_units(
    tmp_path, corpus, model, db_url
) -> None:
    """Rebuilt with settings that cut the corpus's 2 s videos into windows: each video has
    several units in the new build, and its row says how many."""
    engine, index = make_engine(db_url), tmp_path / "index"
    _Uploads(engine, corpus)(2)
    run_indexing(engine, model, index, _cfg(), progress=False)
    assert [len(load_current(index).units(v)) for v in (1, 2)] == [1, 1]
    windows = SegmentCfg(min_s=0.5, max_s=1.0, window_s=0.5, overlap_s=0.0)
    summary = run_rebuild(engine, model, index, _cfg(segments=windows), progress=False)
    assert summary.indexed == 2 and not summary.failed
    build = load_current(index)
    units = {v: len(build.units(v)) for v in (1, 2)}
    assert units == {1: 3, 2: 3}  # 0-0.5, 0.5-1, 1-2
    with Session(engine) as session:
        rows = {v.id: v.segments for v in session.query(Video)}
    assert rows == units


def test_a_second_rebuild_is_refused_while_one_runs(
    tmp_path, corpus, model, db_url, monkeypatch
) -> None:
    engine, index = make_engine(db_url), tmp_path / "index"
    _Uploads(engine, corpus)(4)
    run_indexing(engine, model, index, _cfg(), progress=False)
    held = rebuilds.start(
        engine, worker=queue.worker_name(), checkpoint_sha256="c" * 64, factory="Flat", lease_s=60
    )
    built = load_current(index).name
    with pytest.raises(RebuildRunning, match=f"rebuild #{held.id} for checkpoint cccccccccccc"):
        run_rebuild(engine, _new_model(tmp_path), index, _cfg(), progress=False)
    assert load_current(index).name == built and not staging_dir(index).exists()
    assert rebuilds.running(engine).id == held.id
    from service.cli import app  # the command says so, and fails

    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HANET_DATABASE_URL", db_url)
    monkeypatch.setenv("HANET_CHECKPOINT", str(tmp_path / "new.pt"))
    result = CliRunner().invoke(app, ["index", "rebuild"])
    assert result.exit_code == 1, result.output
    assert f"a rebuild is already running: rebuild #{held.id}" in result.output
    status = CliRunner().invoke(app, ["index", "status"])
    assert f"rebuild #{held.id} for checkpoint cccccccccccc (0/4 videos" in status.output


def test_a_rebuild_stopped_then_run_again_resumes_where_it_was(
    tmp_path, corpus, model, db_url
) -> None:
    """SIGTERM's path: what is encoded is published into the new build, the rest handed back,
    the rebuild let go; the next run takes it up (same rebuild, the new build under way, taken
    back when a swap was killed halfway)."""
    engine, index = make_engine(db_url), tmp_path / "index"
    _Uploads(engine, corpus)(24)
    run_indexing(engine, model, index, _cfg(), progress=False)
    live = load_current(index).name
    new, stop = _new_model(tmp_path), threading.Event()
    thread, out = _in_thread(run_rebuild, engine, new, index, _cfg(batch_size=2), stop=stop,
                             progress=False)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = rebuilds.running(engine)
        if info is not None and info.items["done"] >= 4:
            break
        time.sleep(0.01)
    stop.set()
    thread.join()
    assert out[0].stopped, out
    info = rebuilds.running(engine)
    assert (
        info.claimed_by is None and 4 <= info.items["done"] < 24 and info.items["processing"] == 0
    )
    assert load_current(index).name == live  # still serving the live build
    # as a swap killed between moving the new build in and pointing CURRENT at it leaves it
    os.replace(staging_dir(index) / "builds" / info.build, index / "builds" / info.build)
    summary = run_rebuild(engine, new, index, _cfg(), progress=False)
    assert summary.resumed and summary.rebuild_id == info.id and summary.indexed == 24
    assert rebuilds.get(engine, info.id).items["done"] == 24
    build = load_current(index, expect_checkpoint=new.checkpoint_sha256)
    assert build.manifest["build"] == info.build
    assert set(build.video_ids()) == _rows(engine, "indexed") == set(range(1, 25))


def _hanet(tmp_path: Path, checkpoint: Path) -> tuple[list[str], dict, Path]:
    """`hanet` as a subprocess on the data dir under ``tmp_path``: its command, environment and
    working folder."""
    import sys

    env = {
        **os.environ,
        "HANET_DATA_DIR": str(tmp_path / "data"),
        "HANET_CHECKPOINT": str(checkpoint),
        "HANET_INDEX_BATCH_SIZE": "1",  # a slow rebuild: the kill falls midway
        "HANET_PUBLISH_INTERVAL_S": "0",  # every video published (and marked done) on its own
        "HANET_DECODE_WORKERS": "1",
    }
    env.pop("HANET_TEST_DATABASE_URL", None)  # not a setting: its warning would fill stderr
    hanet = [sys.executable, "-c", "from service.cli import app; app()"]
    return hanet, env, Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kill_9_mid_rebuild_then_rebuild_again_resumes_it(tmp_path, corpus, model) -> None:
    """The CLI end to end: a rebuild killed with kill -9 leaves the live build serving and
    `hanet index status` showing it; `hanet index rebuild` again resumes it (the dead process
    of this host is seen at once) and swaps in a build of every indexed video."""
    import json
    import signal
    import subprocess

    url = f"sqlite:///{tmp_path / 'data' / 'hanet.sqlite3'}"
    migrations.upgrade(url)
    engine, index = make_engine(url), tmp_path / "data" / "index"
    _Uploads(engine, corpus)(96)
    run_indexing(engine, model, index, _cfg(), progress=False)
    live = load_current(index).name
    new = _new_model(tmp_path)
    hanet, env, root = _hanet(tmp_path, tmp_path / "new.pt")
    proc = subprocess.Popen(
        [*hanet, "index", "rebuild"], env=env, cwd=root, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = rebuilds.running(engine)
        if info is not None and info.items["done"] >= 6:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = subprocess.run(
        [*hanet, "index", "status", "--json"], env=env, cwd=root, capture_output=True, text=True
    )
    shown = json.loads(status.stdout)
    assert shown["rebuild"] is not None, "the rebuild had finished before the kill"
    assert shown["rebuild"]["id"] == 1 and shown["rebuild"]["total"] == 96
    assert 6 <= shown["rebuild"]["done"] < 96, shown["rebuild"]  # it really was killed midway
    assert shown["build"]["name"] == live and shown["videos"]["indexed"] == 96
    rerun = subprocess.run(
        [*hanet, "index", "rebuild"], env=env, cwd=root, capture_output=True, text=True
    )
    assert rerun.returncode == 0 and "rebuilt: indexed 96, failed 0" in rerun.stdout, rerun.stderr
    build = load_current(index, expect_checkpoint=new.checkpoint_sha256)
    assert set(build.video_ids()) == _rows(engine, "indexed") == set(range(1, 97))
    assert build.manifest["counts"]["event"] == 96  # each video once, resumed or not
    done = rebuilds.get(engine, 1)
    assert done.state == "done" and done.items["done"] == 96
    with Session(engine) as session:
        assert set(session.scalars(select(Video.checkpoint_sha256))) == {new.checkpoint_sha256}
