"""`hanet index rebuild` with the index in Milvus Lite: the new checkpoint's build (collections
of its own) swaps in with one write and serves the same videos; until then searches use the old
build; a stopped rebuild, or one killed halfway through its swap, is resumed; `--cancel` drops
its build and leaves the old one serving."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import migrations
from db import queue, rebuilds
from db.connect import make_engine
from db.schema import Video
from index.reader import BuildError
from index.vectors import unit_id
from indexer.job import IndexingCfg, run_indexing
from indexer.rebuild import run_rebuild
from indexer.writer import remove_videos
from model import create_model

pytest.importorskip("pymilvus")
CFG = IndexingCfg(decode_workers=1, batch_size=2, poll_s=0.05, publish_interval_s=0)


@pytest.fixture
def milvus(tmp_path, corpus, model):
    """A SQLite database with 4 corpus videos indexed by ``model`` into Milvus Lite (the index
    folder ``tmp_path/index`` served from Milvus in this process): engine, folder, target."""
    from index.milvus import MilvusTarget, use_milvus

    url = f"sqlite:///{tmp_path / 'hanet.sqlite3'}"
    migrations.upgrade(url)
    engine, index = make_engine(url), tmp_path / "index"
    target = MilvusTarget(str(tmp_path / "milvus.db"), prefix="rb")
    use_milvus(index, target)
    files = sorted(p for p in corpus.iterdir() if p.name != "broken.mp4")[:4]
    for i, path in enumerate(files):
        queue.enqueue(engine, media_path=str(path), sha256=f"{i:064d}")
    run_indexing(engine, model, index, CFG, progress=False)
    yield engine, index, target
    use_milvus(index, None)


def _searchable(build) -> set[int]:
    query = np.ones((1, build.vectors.dim), np.float32)
    ids, _, _ = build.top_videos("event", query, k=100)[0]
    return set(ids.tolist())


class _StopOnceDone(threading.Event):
    """A stop request that is made once the running rebuild has a video done (asked where the
    job looks for one: between batches), as SIGTERM would be at that moment."""

    def __init__(self, engine) -> None:
        super().__init__()
        self.engine = engine

    def is_set(self) -> bool:
        info = rebuilds.running(self.engine)
        if info is not None and info.items["done"] >= 1:
            self.set()
        return super().is_set()


def _stopped_rebuild(engine, new, index) -> rebuilds.RebuildInfo:
    """A rebuild stopped (SIGTERM's path) once it has done a batch."""
    summary = run_rebuild(engine, new, index, CFG, stop=_StopOnceDone(engine), progress=False)
    assert summary.stopped, summary
    return rebuilds.running(engine)


def _checkpoints(engine) -> set[str]:
    with Session(engine) as session:
        return set(session.scalars(select(Video.checkpoint_sha256)))


def _cli(tmp_path, monkeypatch, checkpoint: Path, *args: str):
    from service.cli import app

    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HANET_DATABASE_URL", f"sqlite:///{tmp_path / 'hanet.sqlite3'}")
    monkeypatch.setenv("HANET_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("HANET_VECTOR_STORE", "milvus")
    monkeypatch.setenv("HANET_MILVUS_URI", str(tmp_path / "milvus.db"))
    monkeypatch.setenv("HANET_MILVUS_COLLECTION", "rb")
    return CliRunner().invoke(app, ["index", "rebuild", *args])


def _has_build(target, build: str) -> bool:
    return target.client().has_collection(target.name(build, "event"))


@pytest.mark.slow
def test_a_rebuild_in_milvus_serves_the_old_build_until_it_swaps_in(
    tmp_path, corpus, milvus, model, monkeypatch
) -> None:
    """Cancelled (its build dropped), run again and stopped while videos are deleted and the
    old checkpoint indexes uploads into the old build, resumed: the new build swaps in with
    the same videos; then a rebuild back to the old checkpoint killed halfway through its swap
    is finished by `hanet index rebuild`."""
    from index import milvus_rebuild
    from index.milvus_index import MilvusLive, MilvusWriter

    engine, index, target = milvus
    old_live = MilvusLive(target, expect_checkpoint=model.checkpoint_sha256)
    old = old_live.current()
    assert _searchable(old) == {1, 2, 3, 4}
    new = create_model("tiny")
    new.save(str(tmp_path / "new.pt"))
    cancelled = _stopped_rebuild(engine, new, index)
    assert _has_build(target, cancelled.build)
    result = _cli(tmp_path, monkeypatch, tmp_path / "new.pt", "--cancel")
    assert result.exit_code == 0 and f"cancelled rebuild #{cancelled.id}" in result.output
    assert not _has_build(target, cancelled.build) and rebuilds.running(engine) is None

    info = _stopped_rebuild(engine, new, index)
    assert info.claimed_by is None and 1 <= info.items["done"] < 4 and info.build
    assert info.id != cancelled.id and info.build != cancelled.build
    # meanwhile: the old build serves; deletes and the old checkpoint's uploads land in it
    assert old_live.current(wait=True).name == old.name
    assert remove_videos(engine, index, [1]) == [1]
    queue.enqueue(engine, media_path=str(corpus / "synth000009.mp4"), sha256="e" * 64)
    run_indexing(engine, model, index, CFG, progress=False)  # video 5, by the old checkpoint
    assert _searchable(old_live.current(wait=True)) == {2, 3, 4, 5}

    summary = run_rebuild(engine, new, index, CFG, progress=False)  # resumes it
    assert summary.resumed and summary.rebuild_id == info.id and not summary.failed
    assert summary.indexed == 4 and summary.build == f"{info.build}/milvus"
    with pytest.raises(BuildError, match="checkpoint"):
        old_live.current(wait=True)  # the old model's API: refused, as with FAISS builds
    with pytest.raises(BuildError):
        MilvusWriter.open(target, new.cfg, model.checkpoint_sha256, "Flat")
    build = MilvusLive(target, expect_checkpoint=new.checkpoint_sha256).current()
    assert build.manifest["version"] == 2 and build.video_ids() == [2, 3, 4, 5]
    assert _searchable(build) == {2, 3, 4, 5} and not build.known(np.array([unit_id(1, 0)])).any()
    assert not _has_build(target, old.manifest["build"])  # the replaced build dropped
    assert _checkpoints(engine) == {new.checkpoint_sha256}

    back = _stopped_rebuild(engine, model, index)  # back to the old checkpoint, killed mid-swap:
    me = queue.worker_name()
    assert rebuilds.start(
        engine, worker=me, checkpoint_sha256=back.checkpoint_sha256, factory="Flat", lease_s=60
    ).resumed
    assert rebuilds.begin_swap(engine, back.id, worker=me)
    milvus_rebuild.swap(target)  # published, its catch-up and bookkeeping not yet done
    assert rebuilds.stop(engine, back.id, worker=me)  # as a kill leaves it
    result = _cli(tmp_path, monkeypatch, tmp_path / "m.pt", "--cancel")
    assert result.exit_code == 1 and "can no longer be cancelled" in result.output
    result = _cli(tmp_path, monkeypatch, tmp_path / "m.pt")  # resumes it and finishes
    assert result.exit_code == 0 and "rebuilt: indexed 4, failed 0" in result.output, result.output
    build = MilvusLive(target, expect_checkpoint=model.checkpoint_sha256).current()
    assert build.manifest["build"] == back.build and _searchable(build) == {2, 3, 4, 5}
    assert rebuilds.get(engine, back.id).state == "done" and not _has_build(target, info.build)
    assert _checkpoints(engine) == {model.checkpoint_sha256}
