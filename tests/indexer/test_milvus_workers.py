"""Three indexer worker processes, each with its own data directory (no shared index folder, no
file lock), indexing one queue into one Milvus server (a `milvus-lite server`, which speaks
Milvus's gRPC protocol as standalone does); one is killed with SIGKILL while it holds a batch.
Nothing is lost or stored twice."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video
from index.vectors import unit_id

pytest.importorskip("pymilvus")
ROOT = Path(__file__).resolve().parents[2]
HANET = [sys.executable, "-c", "from service.cli import app; app()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def milvus_uri(tmp_path):
    """A Milvus Lite server in its own process, on a free port (every worker is a client)."""
    exe = shutil.which("milvus-lite") or str(Path(sys.executable).parent / "milvus-lite")
    port = _free_port()
    server = subprocess.Popen(
        [exe, "server", "--data-dir", str(tmp_path / "milvus"), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


def _worker(tmp_path: Path, name: str, db_url: str, uri: str, checkpoint: Path):
    env = {
        **os.environ,
        "HANET_DATA_DIR": str(tmp_path / name),  # each its own: nothing of the index in it
        "HANET_DATABASE_URL": db_url,
        "HANET_CHECKPOINT": str(checkpoint),
        "HANET_VECTOR_STORE": "milvus",
        "HANET_MILVUS_URI": uri,
        "HANET_MILVUS_COLLECTION": "workers",
        "HANET_INDEX_BATCH_SIZE": "2",
        "HANET_DECODE_WORKERS": "1",
    }
    return subprocess.Popen(
        [*HANET, "index", "run"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _held_by(engine, pid: int) -> int:
    with Session(engine) as session:
        holders = session.scalars(select(Video.claimed_by).where(Video.status == "processing"))
        return sum(1 for h in holders if h and h.split(":")[1] == str(pid))


@pytest.mark.slow
def test_three_workers_one_killed_index_everything_once(tmp_path, fill, model, milvus_uri):
    db_url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    engine = fill(db_url)  # 12 videos (ids 2..13) and broken.mp4 (id 1)
    checkpoint = tmp_path / "m.pt"
    victim = _worker(tmp_path, "w0", db_url, milvus_uri, checkpoint)
    # the victim claims first: started together on a busy machine, the others could take
    # every job before its first claim
    deadline = time.monotonic() + 120
    while _held_by(engine, victim.pid) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = [victim] + [
        _worker(tmp_path, f"w{i}", db_url, milvus_uri, checkpoint) for i in (1, 2)
    ]
    assert _held_by(engine, victim.pid) > 0  # it holds a batch, not yet marked indexed
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    for w in workers[1:]:
        out, _ = w.communicate(timeout=300)
        assert w.returncode == 0, out
    # the killed worker's jobs: taken back by the next worker started on its host
    last = _worker(tmp_path, "w3", db_url, milvus_uri, checkpoint)
    out, _ = last.communicate(timeout=300)
    assert last.returncode == 0, out
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 12, "failed": 1}

    from index.milvus import MilvusTarget
    from index.milvus_index import load_current, stored_units

    build = load_current(MilvusTarget(milvus_uri, prefix="workers"), model.checkpoint_sha256)
    assert stored_units(build) == {unit_id(v, 0) for v in range(2, 14)}  # nothing lost
    cfg = model.cfg
    counts = {lv: build.vectors.count(lv) for lv in ("event", "action", "entity")}
    assert counts == {  # nothing twice
        "event": 12,
        "action": 12 * cfg.num_action_segments,
        "entity": 12 * cfg.num_entity_segments,
    }
    assert build.vectors.count("rows") == len(build.vectors.client.query(
        build.rows_name, filter="chunk >= 0", output_fields=["id"], limit=16384
    ))  # fmt: skip
    assert len(build) == 12 and build.video_ids() == list(range(2, 14))
    for i in range(4):  # no worker wrote index files into its data directory
        assert not (tmp_path / f"w{i}" / "index" / "CURRENT").exists()
