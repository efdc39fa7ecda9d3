"""The indexing job: reader (PyAV decoding in worker processes) -> embedder (the HANet video
branch, CUDA + bf16 when present) -> writer (FAISS + rerank store, published atomically, then
the database rows). Decoding of the next batch overlaps the model's work on this one."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from db import queue
from db.schema import Video
from index.reader import Build, BuildError, load_current
from index.writer import new_build, publish_latest
from indexer.decode import DecodedVideo, DecodeError, decode_video
from model import HANet, VideoEmbeddings
from model.backbone import autocast
from model.preprocess import normalize_frames

log = logging.getLogger(__name__)


@dataclass
class Summary:
    indexed: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def _read(job: tuple[int, str, int, int]) -> tuple[int, DecodedVideo | str]:
    """Reader, in a worker process: a decoded video, or the reason it cannot be one."""
    video_id, path, frames, size = job
    try:
        return video_id, decode_video(path, frames, size)
    except DecodeError as exc:
        return video_id, str(exc)
    except Exception as exc:  # a decoder crash on a hostile file must not stop the batch
        return video_id, f"cannot decode: {type(exc).__name__}: {exc}"


class Embedder:
    """Decoded videos -> VideoEmbeddings (CPU tensors), halving the batch on CUDA OOM."""

    def __init__(self, model: HANet) -> None:
        self.model = model.eval()

    def __call__(self, videos: list[DecodedVideo]) -> VideoEmbeddings:
        try:
            return self._encode(videos)
        except torch.OutOfMemoryError:
            if len(videos) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(videos) // 2
            log.warning(
                "out of GPU memory at batch %d: retrying as %d + %d",
                len(videos),
                half,
                len(videos) - half,
            )
            return VideoEmbeddings.cat([self(videos[:half]), self(videos[half:])])

    @torch.inference_mode()
    def _encode(self, videos: list[DecodedVideo]) -> VideoEmbeddings:
        model, t = self.model, self.model.cfg.max_frames
        size = model.preprocess.image_size
        frames = np.zeros((len(videos), t, size, size, 3), dtype=np.uint8)
        mask = np.zeros((len(videos), t), dtype=bool)
        for i, v in enumerate(videos):
            frames[i, : len(v.frames)], mask[i, : len(v.frames)] = v.frames, True
        device = model.device
        pixels = normalize_frames(torch.from_numpy(frames).to(device), model.preprocess)
        with autocast(device):
            out = model.encode_video(pixels, torch.from_numpy(mask).to(device))
        return out.to("cpu", dtype=torch.float32)


def frame_times(videos: list[DecodedVideo], frames: int) -> np.ndarray:
    times = np.zeros((len(videos), frames), dtype=np.float32)
    for i, v in enumerate(videos):
        times[i, : len(v.timestamps_s)] = v.timestamps_s
    return times


def open_build(index_dir: Path, model: HANet, factory: str) -> Build:
    """The current build if it belongs to this model; a new one if there is none."""
    try:
        return load_current(index_dir, expect_checkpoint=model.checkpoint_sha256)
    except BuildError:
        if (index_dir / "CURRENT").exists():
            raise
        log.info("no index build yet: starting one")
        return new_build(index_dir, model.cfg, model.checkpoint_sha256 or "unsaved", factory)


@dataclass
class _Held:
    """Embedded videos not yet published (and so not yet marked indexed)."""

    ids: list[int] = field(default_factory=list)
    videos: list[VideoEmbeddings] = field(default_factory=list)
    times: list[np.ndarray] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class IndexingCfg:
    """How an indexer worker works (from the deployment settings, ``HanetSettings.indexing``)."""

    factory: str = "Flat"  # FAISS factory string per level, for a new build
    batch_size: int = 16  # videos per model batch
    decode_workers: int = 2  # decoding processes
    publish_interval_s: float = 0.0  # while more is queued, publish at most this often
    lease_s: float = 300.0  # a claimed job's lease, renewed while the worker holds it
    poll_s: float = 2.0  # how often a watching worker looks for new jobs


def run_indexing(
    engine: Engine,
    model: HANet,
    index_dir: Path,
    cfg: IndexingCfg,
    *,
    watch: bool = False,
    stop: threading.Event | None = None,
    progress: bool = True,
) -> Summary:
    """Index queued videos until the queue is empty (or, with ``watch``, until ``stop``)."""
    return run_queue(
        engine,
        model,
        index_dir,
        factory=cfg.factory,
        batch_size=cfg.batch_size,
        workers=cfg.decode_workers,
        watch=watch,
        poll_s=cfg.poll_s,
        lease_s=cfg.lease_s,
        progress=progress,
        stop=stop,
        publish_s=cfg.publish_interval_s,
    )


def run_queue(
    engine: Engine,
    model: HANet,
    index_dir: Path,
    *,
    factory: str = "Flat",
    batch_size: int = 16,
    workers: int = 2,
    watch: bool = False,
    poll_s: float = 2.0,
    lease_s: float = 300.0,
    progress: bool = True,
    stop: threading.Event | None = None,
    publish_s: float = 0.0,
) -> Summary:
    """Index queued videos until the queue is empty (or, with ``watch``, until ``stop``).

    Embedded batches are published together at most every ``publish_s`` seconds while more
    work is queued (each publish rewrites the level indexes; readers reload them), and at once
    when the queue runs dry or the worker stops. Videos are marked indexed only when published:
    a crash before that leaves them to be indexed again."""
    stop = stop or threading.Event()
    start, summary, worker = time.monotonic(), Summary(), queue.worker_name()
    released = queue.release_dead_workers(engine)
    if released:
        log.info("took back %d jobs of dead workers on this host", released)
    build = open_build(index_dir, model, factory)
    embed = Embedder(model)
    t, size = model.cfg.max_frames, model.preprocess.image_size
    bar = tqdm(
        total=queue.counts(engine)["pending"], unit="video", desc="index", disable=not progress
    )
    with ProcessPoolExecutor(max_workers=workers) as pool:

        def submit() -> dict[int, Future]:
            ids = queue.claim(engine, worker=worker, limit=batch_size, lease_s=lease_s)
            with Session(engine) as session:
                query = select(Video.id, Video.media_path).where(Video.id.in_(ids))
                paths = dict(session.execute(query).all())
            return {i: pool.submit(_read, (i, paths[i], t, size)) for i in ids}

        held, last_publish = _Held(), time.monotonic()

        def publish_held() -> None:
            nonlocal build, held, last_publish
            if held.ids:
                build = _publish(engine, build, index_dir, held, worker, summary)
                bar.set_postfix(indexed=summary.indexed, failed=len(summary.failed))
            held, last_publish = _Held(), time.monotonic()

        batch = submit()
        while (batch or watch) and not stop.is_set():
            if not batch:
                stop.wait(poll_s)
                batch = submit()
                bar.total = bar.n + queue.counts(engine)["pending"] + len(batch)
                continue
            following = submit()  # decoding overlaps the model's work on this batch
            results = [f.result() for f in batch.values()]
            _embed(engine, embed, results, worker, summary, t, held)
            if not following or time.monotonic() - last_publish >= publish_s:
                publish_held()
            queue.renew(engine, worker=worker, ids=list(following) + held.ids, lease_s=lease_s)
            bar.update(len(results))
            batch = following
        publish_held()  # stopped: what is embedded is published, not thrown away
        if batch:  # stopped with a batch claimed and decoding: hand it back
            queue.release(engine, worker=worker, ids=list(batch))
    bar.close()
    summary.seconds = time.monotonic() - start
    return summary


def _embed(
    engine: Engine,
    embed: Embedder,
    results: list,
    worker: str,
    summary: Summary,
    frames: int,
    held: _Held,
) -> None:
    """Embedder: failures recorded with their reasons; the rest embedded into ``held``."""
    good = [(vid, r) for vid, r in results if isinstance(r, DecodedVideo)]
    for vid, reason in results:
        if isinstance(reason, str):
            queue.fail(engine, vid, worker=worker, reason=reason)
            summary.failed[vid] = reason
    if not good:
        return
    decoded = [r for _, r in good]
    held.ids.extend(vid for vid, _ in good)
    held.videos.append(embed(decoded))
    held.times.append(frame_times(decoded, frames))
    held.durations.extend(r.duration_s for r in decoded)


def _publish(
    engine: Engine, build: Build, index_dir: Path, held: _Held, worker: str, summary: Summary
) -> Build:
    """Writer: publish the held videos, and only then mark them indexed (a crash in between
    re-indexes them, replacing their vectors)."""
    video = VideoEmbeddings.cat(held.videos)
    build = publish_latest(index_dir, build, held.ids, video, np.concatenate(held.times))
    for vid, duration in zip(held.ids, held.durations, strict=True):
        if queue.complete(
            engine,
            vid,
            worker=worker,
            duration_s=duration,
            checkpoint_sha256=build.checkpoint_sha256,
        ):
            summary.indexed += 1
    return build
