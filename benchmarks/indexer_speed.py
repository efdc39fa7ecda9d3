"""Indexer speed: videos/s end to end (claim -> reader -> embedder -> writer: FAISS + rerank
store + rows) against the model-only bound (video-branch frames/s / T), the decoding time per
video, and peak memory.

    .venv/bin/python benchmarks/indexer_speed.py [--arch ViT-B-32] [--videos 12]

The inputs are 10-second 640x360 H.264 files written here with PyAV. Random weights: speed does
not depend on their values."""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np
import torch

import migrations
from db import queue
from db.connect import make_engine
from index.writer import IndexWriter
from indexer.decode import decode_video
from indexer.job import IndexingCfg, run_indexing
from model import create_model
from model.backbone import autocast


def write_video(path: Path, seconds: int = 10, fps: int = 30, w: int = 640, h: int = 360) -> None:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    base = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(seconds * fps):
            frame = np.roll(base, t, axis=1).repeat(8, 0).repeat(8, 1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="hanet-bench-"))
    files = [root / f"video{i:03d}.mp4" for i in range(args.videos)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(write_video, files))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = create_model(args.arch)
    model.save(str(root / "model.pt"))
    model.to(device)
    t, size = model.cfg.max_frames, model.preprocess.image_size

    decode_s = []
    for f in files[:4]:
        start = time.perf_counter()
        decode_video(f, t, size)
        decode_s.append(time.perf_counter() - start)

    pixels = torch.randn(args.batch, t, 3, size, size, device=device)
    mask = torch.ones(args.batch, t, dtype=torch.bool, device=device)
    with torch.inference_mode(), autocast(device):
        video = model.encode_video(pixels, mask)
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            video = model.encode_video(pixels, mask)
            _ = video.global_.cpu()  # waits for the GPU
            runs.append(time.perf_counter() - start)
    bound = args.batch / statistics.median(runs)
    video = video.to("cpu", dtype=torch.float32)
    writer = IndexWriter.open(root / "writer-test", model.cfg, "x" * 64, "Flat")
    start = time.perf_counter()
    writer.publish(list(range(1, args.batch + 1)), video, np.zeros((args.batch, t), np.float32))
    writer_s = time.perf_counter() - start

    url = f"sqlite:///{root / 'db.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    for i, f in enumerate(files):
        queue.enqueue(engine, media_path=str(f), sha256=f"{i:064d}")
    start = time.perf_counter()
    cfg = IndexingCfg(batch_size=args.batch, decode_workers=args.workers)
    summary = run_indexing(engine, model, root / "index", cfg, progress=False)
    wall = time.perf_counter() - start
    end_to_end = summary.indexed / wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    where = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    print(
        f"{args.arch}, T={t}, {args.videos} x 10 s 640x360 H.264, batch {args.batch}, "
        f"{args.workers} decode worker(s), {where}"
    )
    print(
        f"  decode per video (in-process, median of 4): {statistics.median(decode_s) * 1000:.0f} ms"
    )
    print(f"  model-only bound: {bound:.3f} videos/s ({bound * t:.1f} frames/s)")
    writer_ms = writer_s * 1000
    print(f"  writer (FAISS + rerank store publish) per batch of {args.batch}: {writer_ms:.0f} ms")
    print(
        f"  end to end      : {end_to_end:.3f} videos/s ({summary.indexed} indexed in "
        f"{wall:.1f} s) = {100 * end_to_end / bound:.0f}% of the bound"
    )
    print(f"  peak RSS: main process {peak:.0f} MiB, largest decode worker {peak_children:.0f} MiB")


if __name__ == "__main__":
    main()
