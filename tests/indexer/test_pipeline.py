"""The indexer end to end: queue -> decode -> video branch -> FAISS + rerank store -> rows."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import migrations
from corpus.synth import generate_corpus
from db import queue
from db.connect import make_engine
from index.reader import BuildError, load_current
from indexer.decode import decode_video
from indexer.pipeline import Summary, run_queue
from indexer.writer import remove_videos
from model import create_model
from model.preprocess import normalize_frames
from model.scores import UNIT_FIELDS
from service.cli import app


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    generate_corpus(root, 12, seed=4, workers=1, progress=False)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    return root / "videos"


@pytest.fixture
def model(tmp_path):
    m = create_model("tiny")
    m.save(str(tmp_path / "m.pt"))
    return m


def _setup(tmp_path: Path, corpus: Path, url: str | None = None):
    url = url or f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    for i, path in enumerate(sorted(corpus.iterdir())):
        queue.enqueue(engine, media_path=str(path), sha256=f"{i:064d}")
    return engine


def test_index_everything_with_reasons_for_failures(tmp_path, corpus, model) -> None:
    engine = _setup(tmp_path, corpus)
    summary = run_queue(engine, model, tmp_path / "index", batch_size=5, workers=2, progress=False)
    assert summary.indexed == 12 and len(summary.failed) == 1
    assert "not a readable media file" in next(iter(summary.failed.values()))
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 12, "failed": 1}
    build = load_current(tmp_path / "index", expect_checkpoint=model.checkpoint_sha256)
    assert build.manifest["counts"]["event"] == 12
    assert build.manifest["counts"]["action"] == 12 * model.cfg.num_action_segments
    # the stored embeddings are what the model gives for the decoded video
    paths = sorted(corpus.iterdir())  # enqueued in this order: ids 1, 2, ...
    video_id = sorted(build.rows)[0]
    path = paths[video_id - 1]
    decoded = decode_video(path, model.cfg.max_frames, model.preprocess.image_size)
    with torch.inference_mode():
        pixels = normalize_frames(torch.from_numpy(decoded.frames), model.preprocess)[None]
        direct = model.encode_video(pixels, torch.ones(1, len(decoded.frames), dtype=torch.bool))
    stored = build.embeddings([video_id])  # kept in float16: within its rounding
    assert stored.action_frames.dtype == torch.float16  # multiplied as stored, not copied
    assert stored.verb_probs.dtype == torch.float32
    assert torch.allclose(stored.global_.float(), direct.global_, atol=1e-3)
    assert torch.allclose(stored.entity_frames.float(), direct.entity_frames, atol=1e-3)
    # the stored Gram matrices are those of the stored rows
    grams = build.grams([video_id])
    assert grams is not None and set(grams) == set(UNIT_FIELDS)
    for name, gram in grams.items():
        units = getattr(stored, name).float()
        assert torch.allclose(gram, units @ units.transpose(1, 2), atol=1e-5)
    assert np.allclose(build.frame_times(video_id)[: len(decoded.frames)], decoded.timestamps_s)


def test_an_ivf_index_type_works_from_the_first_batch(tmp_path, corpus, model) -> None:
    """IVF needs training data: levels are searched exactly until they have enough vectors,
    then trained; either way every indexed video can be found."""
    from service.search import search

    engine = _setup(tmp_path, corpus)
    run_queue(
        engine,
        model,
        tmp_path / "index",
        factory="IVF1,Flat",
        batch_size=5,
        workers=1,
        progress=False,
    )
    build = load_current(tmp_path / "index")
    assert build.vectors.staged == {"event"}  # 12 event vectors < 100; 120 and 240 trained
    hits = search(model, build, "a red circle moves left", top_k=20, rerank=20)
    assert sorted(h.video_id for h in hits) == sorted(build.rows)


def test_warming_touches_every_rerank_row(tmp_path, corpus, model) -> None:
    from index.reader import warm

    engine = _setup(tmp_path, corpus)
    run_queue(engine, model, tmp_path / "index", batch_size=6, workers=1, progress=False)
    build = load_current(tmp_path / "index")
    assert len(build.manifest["parts"]) == 3  # 13 videos in batches of 6
    arrays = [a for part in build.parts for a in part.values()]
    assert all(isinstance(a, np.memmap) for a in arrays)
    assert warm(build) == sum(a.nbytes for a in arrays) > 0


def test_publishing_is_throttled_while_work_is_queued(tmp_path, corpus, model) -> None:
    """With a long publish interval the batches are published together when the queue runs
    dry: one version, one rerank part, every video indexed."""
    engine = _setup(tmp_path, corpus)
    summary = run_queue(
        engine, model, tmp_path / "index", batch_size=2, workers=1, progress=False, publish_s=3600
    )
    assert summary.indexed == 12
    build = load_current(tmp_path / "index")
    assert build.manifest["version"] == 1 and len(build.manifest["parts"]) == 1
    assert len(build.rows) == 12 and queue.counts(engine)["indexed"] == 12


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
        yield url
        migrations.downgrade(url, "base")


def test_two_workers_on_one_index_lose_nothing(tmp_path, corpus, model, db_url) -> None:
    """Two indexer workers share the queue (SKIP LOCKED on PostgreSQL) and the index
    directory: each publishes on top of the other's latest version (under the write lock), so
    every video ends in the build, once."""
    engine = _setup(tmp_path, corpus, db_url)
    errors = []

    def work() -> None:
        try:
            run_queue(
                make_engine(db_url),
                model,
                tmp_path / "index",
                batch_size=2,
                workers=1,
                progress=False,
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
    assert len(build.rows) == 12 and build.manifest["counts"]["event"] == 12
    assert build.manifest["version"] >= 6  # several publishes, interleaved


def test_a_writer_with_a_stale_build_keeps_the_tombstones(tmp_path, corpus, model) -> None:
    from indexer.pipeline import _Held, _publish

    engine = _setup(tmp_path, corpus)
    index = tmp_path / "index"
    run_queue(engine, model, index, batch_size=6, workers=1, progress=False)
    stale = load_current(index)  # a worker's copy, read before the delete below
    gone = sorted(stale.rows)[0]
    assert remove_videos(engine, index, [gone]) == [gone]
    again = sorted(stale.rows)[1]  # re-indexing a video publishes from the stale copy
    held = _Held(
        [again],
        [stale.embeddings([again])],
        [np.zeros((1, model.cfg.max_frames), np.float32)],
        [2.0],
    )
    _publish(engine, stale, index, held, "w", Summary())
    latest = load_current(index)
    assert gone not in latest.rows and again in latest.rows
    assert gone in latest.vectors.deleted


def test_out_of_memory_halves_the_batch_and_keeps_every_video(corpus, model, caplog) -> None:
    """The GPU path's retry, on the CPU: a batch larger than 2 videos raises CUDA's
    out-of-memory error; the embedder splits it until it fits, in order, losing nothing."""
    from indexer.pipeline import Embedder

    paths = sorted(p for p in corpus.iterdir() if p.name != "broken.mp4")[:5]
    decoded = [decode_video(p, model.cfg.max_frames, model.preprocess.image_size) for p in paths]
    embed = Embedder(model)
    real, sizes = embed._encode, []

    def tight(videos):
        sizes.append(len(videos))
        if len(videos) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(videos)

    embed._encode = tight
    with caplog.at_level("WARNING"):
        out = embed(decoded)
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert "out of GPU memory at batch 5" in caplog.text
    whole = real(decoded)
    assert torch.allclose(out.global_, whole.global_, atol=1e-5)
    assert torch.equal(out.action_spans, whole.action_spans)


def test_rerun_after_a_crash_before_the_rows_adds_no_duplicates(tmp_path, corpus, model) -> None:
    engine = _setup(tmp_path, corpus)
    run_queue(engine, model, tmp_path / "index", batch_size=4, workers=1, progress=False)
    counts = load_current(tmp_path / "index").manifest["counts"]
    # as if the worker died after publishing but before marking its rows: index them again
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE videos SET status = 'pending' WHERE status = 'indexed'")
    run_queue(engine, model, tmp_path / "index", batch_size=4, workers=1, progress=False)
    assert load_current(tmp_path / "index").manifest["counts"] == counts
    assert queue.counts(engine)["indexed"] == 12


def test_a_build_of_another_checkpoint_is_refused(tmp_path, corpus, model) -> None:
    engine = _setup(tmp_path, corpus)
    run_queue(engine, model, tmp_path / "index", batch_size=8, workers=1, progress=False)
    other = create_model("tiny")
    other.save(str(tmp_path / "other.pt"))
    with pytest.raises(BuildError, match="hanet index rebuild"):
        load_current(tmp_path / "index", expect_checkpoint=other.checkpoint_sha256)
    with pytest.raises(BuildError, match="hanet index rebuild"):
        run_queue(engine, other, tmp_path / "index", progress=False)


def test_cli_add_run_status_rebuild(tmp_path, corpus, model, monkeypatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HANET_CHECKPOINT", str(tmp_path / "m.pt"))
    result = runner.invoke(app, ["index", "add", str(corpus)])
    assert result.exit_code == 0 and "queued 13 new videos" in result.output, result.output
    result = runner.invoke(app, ["index", "add", str(corpus)])
    assert "queued 0 new videos (13 already known)" in result.output
    result = runner.invoke(app, ["index", "run"])
    assert result.exit_code == 0 and "indexed 12, failed 1" in result.output, result.output
    result = runner.invoke(app, ["index", "status", "--json"])
    status = json.loads(result.output)
    assert status["videos"]["indexed"] == 12 and status["build"]["vectors"]["event"] == 12
    first = status["build"]["name"]
    other = create_model("tiny")
    other.save(str(tmp_path / "other.pt"))
    monkeypatch.setenv("HANET_CHECKPOINT", str(tmp_path / "other.pt"))
    result = runner.invoke(app, ["index", "rebuild"])
    assert result.exit_code == 0 and "indexed 12" in result.output, result.output
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


def test_kill_9_mid_run_then_rerun_matches_an_uninterrupted_run(tmp_path, corpus, model) -> None:
    import os
    import signal
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
    assert queue.counts(engine) == {"pending": 0, "processing": 0, "indexed": 12, "failed": 1}
    build = load_current(tmp_path / "data" / "index")
    n = model.cfg
    assert build.manifest["counts"] == {
        "event": 12,
        "action": 12 * n.num_action_segments,
        "entity": 12 * n.num_entity_segments,
    }
    assert sorted(build.rows) == sorted(
        i for i, p in enumerate(sorted(corpus.iterdir()), start=1) if p.name != "broken.mp4"
    )


def test_sigterm_stops_a_watching_worker_cleanly(tmp_path, corpus, model) -> None:
    """`docker stop`: the worker finishes the batch in hand, gives back what it claimed ahead,
    prints its summary and exits 0; nothing stays `processing`."""
    import signal
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
    assert counts["indexed"] + counts["failed"] < 13, counts  # it stopped before the end
    assert counts["indexed"] == len(load_current(tmp_path / "data" / "index").rows)


def test_delete_is_immediate_and_compaction_drops_the_rows(
    tmp_path, corpus, model, monkeypatch
) -> None:
    from index import writer as build_module
    from index.writer import compact, delete_videos

    engine = _setup(tmp_path, corpus)
    run_queue(engine, model, tmp_path / "index", batch_size=5, workers=1, progress=False)
    before = load_current(tmp_path / "index")
    victim = sorted(before.rows)[3]
    query = before.embeddings([victim]).global_.numpy()
    assert before.vectors.search("event", query, 1)[0][0].video_id == victim
    delete_videos(tmp_path / "index", [victim])
    after = load_current(tmp_path / "index")
    assert victim not in after.rows
    for level in ("event", "action", "entity"):
        assert victim not in {h.video_id for h in after.vectors.search(level, query, 50)[0]}
    assert after.manifest["counts"]["event"] == 12  # still in the files
    monkeypatch.setattr(build_module, "GRAM_CHUNK", 4)  # the 11 rows' Gram matrices in 3 goes
    compacted = compact(tmp_path / "index")
    assert compacted.manifest["counts"]["event"] == 11 and len(compacted.manifest["parts"]) == 1
    again = load_current(tmp_path / "index")
    assert sorted(again.rows) == sorted(set(before.rows) - {victim})
    keep = sorted(again.rows)[0]
    assert torch.equal(again.embeddings([keep]).global_, before.embeddings([keep]).global_)
    live = sorted(again.rows)
    rewritten, original = again.grams(live), before.grams(live)
    assert rewritten is not None and original is not None
    assert all(torch.equal(rewritten[k], original[k]) for k in original)


def test_search_with_enough_candidates_equals_full_scoring(tmp_path, corpus, model) -> None:
    from service.search import search

    engine = _setup(tmp_path, corpus)
    run_queue(engine, model, tmp_path / "index", batch_size=6, workers=1, progress=False)
    build = load_current(tmp_path / "index")
    query = "a small red star moves left, then a blue circle grows"
    hits = search(model, build, query, top_k=12, rerank=12)
    everything = sorted(build.rows)
    with torch.inference_mode():
        full = model.similarity(model.encode_text([query]), build.embeddings(everything))["fused"][
            0
        ]
    expected = [everything[i] for i in full.argsort(descending=True).tolist()]
    assert [h.video_id for h in hits] == expected
    assert hits[0].score == pytest.approx(float(full.max()), abs=1e-6)
    assert all(0 <= h.start_s < h.end_s <= 2.0 for h in hits)
    # a build written before the Gram matrices were stored scores the same from its rows
    for gram_file in build.root.glob("parts/*/gram_*.npy"):
        gram_file.unlink()
    older = load_current(tmp_path / "index")
    assert older.grams(everything) is None
    again = search(model, older, query, top_k=12, rerank=12)
    assert [h.video_id for h in again] == expected
    assert [h.score for h in again] == pytest.approx([h.score for h in hits], abs=1e-5)
    assert [(h.start_s, h.end_s) for h in again] == [(h.start_s, h.end_s) for h in hits]


def test_a_moment_covers_the_stretch_its_frames_stand_for() -> None:
    from service.search import moment_seconds

    times = (np.arange(8) + 0.5) * 0.25  # 8 frames sampled at the middle of 2 s / 8 bins
    assert moment_seconds(times, 0, 0) == (0.0, 0.25)
    assert moment_seconds(times, 2, 6) == (0.5, 1.75)
    assert moment_seconds(times, 7, 7) == (1.75, 2.0)
    assert moment_seconds(np.array([0.0, 0.5, 2.0]), 1, 1) == (0.25, 1.25)  # uneven samples
    assert moment_seconds(np.array([0.4]), 0, 0) == (0.4, 0.4)  # a one-frame video
