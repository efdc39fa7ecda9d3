"""The indexing job end to end: queue -> reader -> embedder -> writer (FAISS + rerank store,
then the rows), one worker or several, stopped, killed and run again."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import migrations
from db import queue
from db.connect import make_engine
from db.schema import Video
from index.reader import BuildError, load_current
from indexer.decode import decode_video
from indexer.job import IndexingCfg, run_indexing
from model import create_model
from model.preprocess import normalize_frames
from model.scores import UNIT_FIELDS


def _cfg(**kw) -> IndexingCfg:
    return IndexingCfg(**{"decode_workers": 1, **kw})


def test_index_everything_with_reasons_for_failures(tmp_path, corpus, fill, model) -> None:
    engine = fill()
    cfg = _cfg(batch_size=5, decode_workers=2)
    summary = run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    assert summary.indexed == 12 and len(summary.failed) == 1
    assert "not a readable media file" in next(iter(summary.failed.values()))
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 12, "failed": 1}
    build = load_current(tmp_path / "index", expect_checkpoint=model.checkpoint_sha256)
    assert build.manifest["counts"]["event"] == 12
    assert build.manifest["counts"]["action"] == 12 * model.cfg.num_action_segments
    # the stored embeddings are what the model gives for the decoded video
    paths = sorted(corpus.iterdir())  # enqueued in this order: ids 1, 2, ...
    video_id = build.video_ids()[0]
    path = paths[video_id - 1]
    decoded = decode_video(path, model.cfg.max_frames, model.preprocess.image_size)
    with torch.inference_mode():
        pixels = normalize_frames(torch.from_numpy(decoded.frames), model.preprocess)[None]
        direct = model.encode_video(pixels, torch.ones(1, len(decoded.frames), dtype=torch.bool))
    stored = build.embeddings(build.units(video_id))  # kept in float16: within its rounding
    assert stored.action_frames.dtype == torch.float16  # multiplied as stored, not copied
    assert stored.verb_probs.dtype == torch.float32
    assert torch.allclose(stored.global_.float(), direct.global_, atol=1e-3)
    assert torch.allclose(stored.entity_frames.float(), direct.entity_frames, atol=1e-3)
    # the stored Gram matrices are those of the stored rows
    grams = build.grams(build.units(video_id))
    assert grams is not None and set(grams) == set(UNIT_FIELDS)
    for name, gram in grams.items():
        units = getattr(stored, name).float()
        assert torch.allclose(gram, units @ units.transpose(1, 2), atol=1e-5)
    assert np.allclose(
        build.frame_times(build.units(video_id)[0])[: len(decoded.frames)], decoded.timestamps_s
    )


def test_the_rows_keep_the_concepts_of_the_stored_embeddings(tmp_path, fill, vocab_model) -> None:
    """What the API computed from the index at read time is now on each row: the top three
    actions and entities of the embeddings (float32 at indexing; the index keeps the
    probabilities rounded to float16, hence the tolerance)."""
    engine = fill()
    run_indexing(engine, vocab_model, tmp_path / "index", _cfg(batch_size=5), progress=False)
    build = load_current(tmp_path / "index")
    with Session(engine) as session:
        rows = {v.id: v for v in session.query(Video).filter(Video.status == "indexed")}
    assert sorted(rows) == build.video_ids() and len(rows) == 12
    stored = build.embeddings([u for v in build.video_ids() for u in build.units(v)])
    vocab = vocab_model.vocab
    for i, video_id in enumerate(build.video_ids()):
        row = rows[video_id]
        assert row.duration_s == 2.0 and row.checkpoint_sha256 == vocab_model.checkpoint_sha256
        assert set(row.concepts) == {"actions", "entities"}
        kinds = {
            "actions": (stored.verb_probs, vocab.verbs),
            "entities": (stored.noun_probs, vocab.nouns),
        }
        for kind, (probs, names) in kinds.items():
            found, p = row.concepts[kind], probs[i]
            ranked = [c["probability"] for c in found]
            assert len(found) == 3 and ranked == sorted(ranked, reverse=True)
            fourth = float(p.topk(4).values[3])
            for c in found:
                assert c["probability"] == pytest.approx(float(p[names.index(c["name"])]), abs=1e-3)
                assert c["probability"] >= fourth - 1e-3


@pytest.mark.slow
def test_an_ivf_index_type_works_from_the_first_batch(tmp_path, fill, model) -> None:
    """IVF needs training data: levels are searched exactly until they have enough vectors,
    then trained; either way every indexed video can be found."""
    from service.search import search

    engine = fill()
    cfg = _cfg(factory="IVF1,Flat", batch_size=5)
    run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    build = load_current(tmp_path / "index")
    assert build.vectors.staged == {"event"}  # 12 event vectors < 100; 120 and 240 trained
    hits = search(model, build, "a red circle moves left", top_k=20, rerank=20)
    assert sorted(h.video_id for h in hits) == build.video_ids()


def test_the_row_format_setting_reaches_a_new_build(tmp_path, fill, model) -> None:
    """HANET_INDEX_ROWS=int8: the worker writes int8 rows, and searches find every video."""
    from index.reader import part_format
    from service.search import search
    from service.settings import HanetSettings

    engine = fill()
    cfg = HanetSettings(index_rows="int8", decode_workers=1, index_batch_size=6).indexing
    run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    build = load_current(tmp_path / "index")
    assert build.manifest["rows"] == "int8"
    assert {part_format(part) for part in build.parts} == {"int8"}
    hits = search(model, build, "a red circle moves left", top_k=20, rerank=20)
    assert sorted(h.video_id for h in hits) == build.video_ids()
    assert HanetSettings().indexing.rows == "float16"  # the default stays float16


def test_warming_touches_every_rerank_row(tmp_path, fill, model) -> None:
    engine = fill()
    run_indexing(engine, model, tmp_path / "index", _cfg(batch_size=6), progress=False)
    build = load_current(tmp_path / "index")
    assert len(build.manifest["parts"]) == 3  # 13 videos in batches of 6
    arrays = [a for part in build.parts for a in part.values()]
    assert all(isinstance(a, np.memmap) for a in arrays)
    loaded = [f for f in build.root.glob("parts/*/*.npy") if f.name != "unit_ids.npy"]
    assert build.warm() == sum(np.load(f, mmap_mode="r").nbytes for f in loaded) > 0


def test_publishing_is_throttled_while_work_is_queued(tmp_path, fill, model) -> None:
    """With a long publish interval the batches are published together when the queue runs
    dry: one version, one rerank part, every video indexed."""
    engine = fill()
    cfg = _cfg(batch_size=2, publish_interval_s=3600)
    summary = run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    assert summary.indexed == 12
    build = load_current(tmp_path / "index")
    assert build.manifest["version"] == 1 and len(build.manifest["parts"]) == 1
    assert len(build) == 12 and queue.counts(engine)["indexed"] == 12


class _StopAfter(threading.Event):
    """A stop signal that sets itself when the job has looked at it ``checks`` times (the job
    looks once per batch): SIGTERM at a known point."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        if self.checks < 0:
            self.set()
        return super().is_set()


@pytest.mark.slow
def test_a_stopped_worker_publishes_what_it_embedded_and_hands_back_the_rest(
    tmp_path, fill, model
) -> None:
    """Stopped after two batches of 2 (ids 1-4, 1 being broken.mp4), while it decoded the
    third: the three embedded videos are published (though the interval had not passed), the
    claimed third batch goes back to pending, nothing stays processing."""
    engine = fill()
    cfg = _cfg(batch_size=2, publish_interval_s=3600)
    stop = _StopAfter(checks=2)
    summary = run_indexing(
        engine, model, tmp_path / "index", cfg, watch=True, stop=stop, progress=False
    )
    assert summary.indexed == 3 and list(summary.failed) == [1]
    assert queue.counts(engine) == {"pending": 9, "processing": 0, "indexed": 3, "failed": 1}
    build = load_current(tmp_path / "index")
    assert build.video_ids() == [2, 3, 4] and build.manifest["version"] == 1
    again = run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    assert again.indexed == 9 and not again.failed  # the rest, handed back, is indexed now
    assert len(load_current(tmp_path / "index")) == 12


def test_a_worker_stopped_before_it_starts_claims_nothing_for_long(tmp_path, fill, model) -> None:
    engine = fill()
    stop = threading.Event()
    stop.set()
    summary = run_indexing(engine, model, tmp_path / "index", _cfg(), stop=stop, progress=False)
    assert summary.indexed == 0 and not summary.failed
    assert queue.counts(engine) == {"pending": 13, "processing": 0, "indexed": 0, "failed": 0}


def test_jobs_of_a_dead_worker_on_this_host_are_taken_back_at_start(tmp_path, fill, model) -> None:
    import socket

    engine = fill()
    dead = f"{socket.gethostname()}:{2**22 + 7}:gone"  # above Linux's pid_max: not running
    assert len(queue.claim(engine, worker=dead, limit=4, lease_s=3600)) == 4
    summary = run_indexing(engine, model, tmp_path / "index", _cfg(), progress=False)
    assert summary.indexed == 12 and len(summary.failed) == 1
    assert queue.counts(engine)["processing"] == 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
        yield url
        migrations.downgrade(url, "base")


def test_two_workers_on_one_index_lose_nothing(tmp_path, fill, model, db_url) -> None:
    """Two indexer workers share the queue (SKIP LOCKED on PostgreSQL) and the index
    directory: each publishes on top of the other's latest version (under the write lock), so
    every video ends in the build, once."""
    engine = fill(db_url)
    errors = []

    def work() -> None:
        try:
            run_indexing(
                make_engine(db_url), model, tmp_path / "index", _cfg(batch_size=2), progress=False
            )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 12, "failed": 1}
    build = load_current(tmp_path / "index")
    assert len(build) == 12 and build.manifest["counts"]["event"] == 12
    assert build.manifest["version"] >= 6  # several publishes, interleaved


@pytest.mark.slow
def test_rerun_after_a_crash_before_the_rows_adds_no_duplicates(tmp_path, fill, model) -> None:
    engine = fill()
    cfg = _cfg(batch_size=4)
    run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    counts = load_current(tmp_path / "index").manifest["counts"]
    # as if the worker died after publishing but before marking its rows: index them again
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE videos SET status = 'pending' WHERE status = 'indexed'")
    run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    assert load_current(tmp_path / "index").manifest["counts"] == counts
    assert queue.counts(engine)["indexed"] == 12


@pytest.mark.slow
def test_a_build_of_another_checkpoint_is_refused(tmp_path, fill, model) -> None:
    engine = fill()
    run_indexing(engine, model, tmp_path / "index", _cfg(batch_size=8), progress=False)
    other = create_model("tiny")
    other.save(str(tmp_path / "other.pt"))
    with pytest.raises(BuildError, match="hanet index rebuild"):
        load_current(tmp_path / "index", expect_checkpoint=other.checkpoint_sha256)
    with pytest.raises(BuildError, match="hanet index rebuild"):
        run_indexing(engine, other, tmp_path / "index", IndexingCfg(), progress=False)


@pytest.mark.slow
def test_cli_add_run_status_rebuild(tmp_path, corpus, model, monkeypatch) -> None:
    from service.cli import app

    runner = CliRunner()
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HANET_CHECKPOINT", str(tmp_path / "m.pt"))
    result = runner.invoke(app, ["index", "add", str(corpus)])
    assert result.exit_code == 0, result.output
    assert "queued 12 new videos (0 already known, 1 refused)" in result.output
    assert "refused " + str(corpus / "broken.mp4") + ": not a video" in result.output
    result = runner.invoke(app, ["index", "add", str(corpus)])
    assert "queued 0 new videos (12 already known, 1 refused)" in result.output
    before = signal.getsignal(signal.SIGTERM)
    result = runner.invoke(app, ["index", "run"])
    assert result.exit_code == 0 and "indexed 12, failed 0" in result.output, result.output
    assert signal.getsignal(signal.SIGTERM) is before  # the job's own handler is gone with it
    result = runner.invoke(app, ["index", "status", "--json"])
    status = json.loads(result.output)
    assert status["videos"]["indexed"] == 12 and status["build"]["vectors"]["event"] == 12
    first = status["build"]["name"]
    other = create_model("tiny")
    other.save(str(tmp_path / "other.pt"))
    monkeypatch.setenv("HANET_CHECKPOINT", str(tmp_path / "other.pt"))
    result = runner.invoke(app, ["index", "rebuild"])
    assert result.exit_code == 0 and "indexed 12" in result.output, result.output
    assert signal.getsignal(signal.SIGTERM) is before
    status = json.loads(runner.invoke(app, ["index", "status", "--json"]).output)
    assert status["build"]["name"] != first
    assert status["build"]["checkpoint_sha256"] == other.checkpoint_sha256


def _cli_with_corpus_queued(tmp_path: Path, corpus: Path):
    """`hanet` as a subprocess (its command prefix, environment and working folder) on a data
    dir where the corpus is queued, and an engine on that data dir's database."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "HANET_DATA_DIR": str(tmp_path / "data"),
        "HANET_CHECKPOINT": str(tmp_path / "m.pt"),
        "HANET_INDEX_BATCH_SIZE": "2",
        "HANET_DECODE_WORKERS": "1",
        "HANET_PUBLISH_INTERVAL_S": "0",
    }
    hanet = [sys.executable, "-c", "from service.cli import app; app()"]
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [*hanet, "index", "add", str(corpus)], env=env, cwd=root, check=True, capture_output=True
    )
    return hanet, env, root, make_engine(f"sqlite:///{tmp_path / 'data' / 'hanet.sqlite3'}")


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_matches_an_uninterrupted_run(tmp_path, corpus, model) -> None:
    import os
    import subprocess
    import time

    hanet, env, root, engine = _cli_with_corpus_queued(tmp_path, corpus)
    proc = subprocess.Popen(
        [*hanet, "index", "run"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while queue.counts(engine)["indexed"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = queue.counts(engine)
    assert 4 <= interrupted["indexed"] < 12, interrupted  # it really was stopped midway
    rerun = subprocess.run(
        [*hanet, "index", "run"], env=env, cwd=root, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    # broken.mp4 was refused by `hanet index add` (its probe), so it never reached the queue
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 12, "failed": 0}
    build = load_current(tmp_path / "data" / "index")
    n = model.cfg
    assert build.manifest["counts"] == {
        "event": 12,
        "action": 12 * n.num_action_segments,
        "entity": 12 * n.num_entity_segments,
    }
    assert build.video_ids() == list(range(1, 13))


@pytest.mark.slow
def test_sigterm_stops_a_watching_worker_cleanly(tmp_path, corpus, model) -> None:
    """`docker stop`: the worker finishes the batch in hand, gives back what it claimed ahead,
    prints its summary and exits 0; nothing stays `processing`."""
    import subprocess
    import time

    hanet, env, root, engine = _cli_with_corpus_queued(tmp_path, corpus)
    proc = subprocess.Popen(
        [*hanet, "index", "run", "--watch"],
        env=env,
        cwd=root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while queue.counts(engine)["indexed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.startswith("indexed ")
    counts = queue.counts(engine)
    assert counts["processing"] == 0, counts
    assert counts["indexed"] + counts["failed"] < 12, counts  # it stopped before the end
    assert counts["indexed"] == len(load_current(tmp_path / "data" / "index"))
