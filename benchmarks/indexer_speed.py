"""Indexer speed, end to end (claim -> reader -> embedder -> writer: FAISS + rerank store + rows),
for short clips or for one long video: videos/s and hours of video per hour, where the time goes
(decode, model, writer) and the model-only bound.

    .venv/bin/python benchmarks/indexer_speed.py                      # 12 x 10 s 640x360 clips
    .venv/bin/python benchmarks/indexer_speed.py --long               # a 180 s 1280x720 file
    .venv/bin/python benchmarks/indexer_speed.py --long --file F.mp4 --runs 3 --threads 1
    .venv/bin/python benchmarks/indexer_speed.py --long --decode-only --hwaccel cuda --runs 0

Short mode writes 10-second 640x360 H.264 files with PyAV and indexes them with ``--arch``
(random weights: speed does not depend on their values) or ``--checkpoint``. Long mode writes
(once, into ``--work``) a ``--long-s`` second 1280x720 H.264 file at a realistic bitrate (a
camera panning over a detailed texture, with film grain, libx264 CRF 23) or takes ``--file``,
and indexes it with the demo checkpoint, as segments.

Time shares: the model stage is the wall and CPU time inside ``Embedder`` calls, the writer
stage inside ``BatchWriter.hold`` and ``.publish`` (the process's CPU time over those spans,
its threads together); decode is the CPU time of the decoding processes (they overlap the
model), and ``waiting`` the main process's wall time outside both stages (mostly waiting for
decoded chunks). Decode-only: the same file decoded in this process, one chunk after another.
The model-only bound: the embedder on random frames, units/s, turned into videos/s and hours of
video per hour at the run's units per video.

``--hwaccel`` (``SegmentCfg.hwaccel``) chooses hardware decoding; the header says what this
process chose and why. Decode-only says which decoder read each chunk and a digest of the
frames; when NVDEC read any, the file is decoded again in software and the frames compared (the
check for a GPU host: NVDEC must give the software decoder's frames). ``--device cuda`` runs
the model on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import resource
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np
import torch

import migrations
from db import queue
from db.connect import make_engine
from indexer.decode import process_hwaccel
from indexer.embedder import Embedder, Unit
from indexer.job import IndexingCfg, run_indexing
from indexer.segment_plan import HWACCELS
from indexer.segments import DecodedSegment, SegmentCfg, decode_segments
from indexer.writer import BatchWriter
from model import HANet, create_model, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "model" / "weights" / "hanet-tiny-demo.pt"


def write_video(path: Path, seconds: int = 10, fps: int = 30, w: int = 640, h: int = 360) -> None:
    """A short clip: a blocky random image scrolling sideways."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    base = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(seconds * fps):
            frame = np.roll(base, t, axis=1).repeat(8, 0).repeat(8, 1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_long_video(
    path: Path, seconds: float, w: int = 1280, h: int = 720, fps: int = 30
) -> None:
    """A camera panning over a detailed texture (a new texture and direction every 8-20 s: hard
    cuts), with fresh grain on every frame: H.264 at CRF 23 (preset veryfast), which gives a
    bitrate of the order of real 720p footage (printed by ``describe``)."""
    rng = np.random.default_rng(0)
    t, shot = 0, 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        while t < seconds * fps:
            length = int(rng.uniform(8, 20) * fps)
            texture = _texture(rng, 2 * h, 2 * w)  # (2h, 2w, 3)
            dx, dy = rng.uniform(-3, 3, size=2)
            for i in range(min(length, int(seconds * fps) - t)):
                x, y = int(w / 2 + dx * i) % w, int(h / 2 + dy * i) % h
                image = texture[y : y + h, x : x + w].astype(np.int16)
                image += rng.integers(-6, 7, size=(h, w, 1), dtype=np.int16)  # grain
                frame = np.clip(image, 0, 255).astype(np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            t, shot = t + length, shot + 1
        container.mux(stream.encode())


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blobs of colour at several scales (smooth areas and fine detail), uint8 (h, w, 3)."""
    out = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((64, 90.0), (16, 40.0), (4, 25.0)):
        small = rng.uniform(-amp, amp, size=(h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        out += small.repeat(cell, 0).repeat(cell, 1)[:h, :w]
    return np.clip(out + 128, 0, 255).astype(np.uint8)


def describe(path: Path) -> tuple[float, str]:
    """(duration_s, "codec WxH, N kbit/s") of a file's video stream."""
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        seconds = float(s.duration * s.time_base) if s.duration else container.duration / 1e6
        kbits = path.stat().st_size * 8 / seconds / 1000
        return seconds, f"{s.codec_context.name} {s.width}x{s.height}, {kbits:.0f} kbit/s"


class StageClock:
    """Wall and CPU seconds spent inside chosen methods (instrumentation of the real classes
    for the benchmark's lifetime: each call runs the original)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._originals: list[tuple[type, str, object]] = []

    def restore(self) -> None:
        for cls, method, original in reversed(self._originals):
            setattr(cls, method, original)
        self._originals = []

    def wrap(self, cls: type, method: str, stage: str) -> None:
        original = getattr(cls, method)
        self._originals.append((cls, method, original))

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), _cpu_s(resource.RUSAGE_SELF)
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[stage] += time.perf_counter() - wall
                self.cpu[stage] += _cpu_s(resource.RUSAGE_SELF) - cpu

        setattr(cls, method, timed)


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Run:
    videos: int
    video_s: float
    units: int
    wall_s: float
    cpu_s: float  # this process
    decode_cpu_s: float  # the decoding processes
    stage_wall: dict[str, float]
    stage_cpu: dict[str, float]


def index_files(files: list[Path], model: HANet, cfg: IndexingCfg, root: Path) -> Run:
    """Index ``files`` with the real job into a fresh database and index under ``root``."""
    url = f"sqlite:///{root / 'db.sqlite3'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    for i, f in enumerate(files):
        queue.enqueue(engine, media_path=str(f), sha256=f"{i:064d}")
    clock = StageClock()
    clock.wrap(Embedder, "__call__", "model")
    clock.wrap(Embedder, "concepts", "model")
    clock.wrap(BatchWriter, "hold", "writer")
    clock.wrap(BatchWriter, "publish", "writer")
    try:
        children, cpu = _cpu_s(resource.RUSAGE_CHILDREN), _cpu_s(resource.RUSAGE_SELF)
        start = time.perf_counter()
        summary = run_indexing(engine, model, root / "index", cfg, progress=False)
        wall = time.perf_counter() - start
        cpu = _cpu_s(resource.RUSAGE_SELF) - cpu
        decode_cpu = _cpu_s(resource.RUSAGE_CHILDREN) - children  # the pool was shut down
    finally:
        clock.restore()
    if summary.failed:
        raise SystemExit(f"failed: {summary.failed}")
    counts = queue.counts(engine)
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT sum(duration_s), sum(segments) FROM videos").one()
    engine.dispose()
    return Run(
        counts["indexed"], float(row[0]), int(row[1]), wall, cpu, decode_cpu,
        dict(clock.wall), dict(clock.cpu),
    )  # fmt: skip


@dataclasses.dataclass
class DecodeOnly:
    wall_s: float
    cpu_s: float
    segments: int
    decoders: Counter  # chunks read by each decoder ("software", "cuda")
    digest: str  # sha256 of every segment's span, times, frames and motion partners


def decode_only(path: Path, model: HANet, cfg: SegmentCfg) -> DecodeOnly:
    """Decode the whole file in this process, chunk by chunk (the digest's time excluded)."""
    t, size = model.cfg.max_frames, model.preprocess.image_size
    wall, cpu = time.perf_counter(), time.process_time()
    start, segments, decoders, digest = 0.0, 0, Counter(), hashlib.sha256()
    hashing_wall = hashing_cpu = 0.0
    while start is not None:
        chunk = decode_segments(path, t, size, cfg, start_s=start)
        start, segments = chunk.next_start_s, segments + len(chunk.segments)
        decoders[chunk.decoder] += 1
        hash_wall, hash_cpu = time.perf_counter(), time.process_time()
        for s in chunk.segments:
            digest.update(np.array([s.start_s, s.end_s]).tobytes())
            for array in (s.timestamps_s, s.frames, s.following):
                digest.update(array.tobytes())
        hashing_wall += time.perf_counter() - hash_wall
        hashing_cpu += time.process_time() - hash_cpu
    return DecodeOnly(
        time.perf_counter() - wall - hashing_wall,
        time.process_time() - cpu - hashing_cpu,
        segments,
        decoders,
        digest.hexdigest(),
    )


def report_decode_only(path: Path, model: HANet, cfg: SegmentCfg) -> None:
    """Decode-only figures; where NVDEC read any chunk, the frames compared with software's."""
    run = decode_only(path, model, cfg)
    print(
        f"  decode only, in process: {run.wall_s:.1f} s wall, {run.cpu_s:.1f} CPU s, "
        f"{run.segments} units; chunks by decoder {dict(run.decoders)}; frames sha256 "
        f"{run.digest[:16]}",
        flush=True,
    )
    if run.decoders["cuda"]:
        soft = decode_only(path, model, dataclasses.replace(cfg, hwaccel="none"))
        same = "IDENTICAL" if soft.digest == run.digest else "DIFFERENT"
        print(
            f"  software decoding of the same file: {soft.wall_s:.1f} s wall, {soft.cpu_s:.1f} "
            f"CPU s, frames sha256 {soft.digest[:16]}: NVDEC's frames are {same}"
        )


def model_bound(model: HANet, batch: int, seconds_per_unit: float) -> float:
    """Units/s of the embedder alone (normalisation and the video branch) on random frames,
    median of 3 batches after a warm-up; frames ``seconds_per_unit / T`` apart."""
    t, size = model.cfg.max_frames, model.preprocess.image_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8)
    times = np.arange(t) * seconds_per_unit / t
    unit = DecodedSegment(0.0, seconds_per_unit, frames, frames[::-1].copy(), times)
    units = [Unit(1, i, unit) for i in range(batch)]
    embed = Embedder(model)
    embed(units)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        embed(units)
        runs.append(time.perf_counter() - start)
    return batch / statistics.median(runs)


def report(run: Run, bound_units_s: float, label: str) -> None:
    units_per_video, seconds_per_unit = run.units / run.videos, run.video_s / run.units
    total_cpu = run.cpu_s + run.decode_cpu_s
    bound_videos_s = bound_units_s / units_per_video
    bound_hours = bound_units_s * seconds_per_unit  # video seconds per second = hours per hour
    waiting = run.wall_s - sum(run.stage_wall.values())
    hour_wall, hour_cpu = 3600 * run.wall_s / run.video_s, 3600 * total_cpu / run.video_s
    rest_cpu = run.cpu_s - sum(run.stage_cpu.values())
    print(
        f"{label}: {run.videos} videos, {run.video_s:.0f} s of video, {run.units} units, "
        f"in {run.wall_s:.1f} s wall, {total_cpu:.1f} CPU s (main {run.cpu_s:.1f}, decoding "
        f"processes {run.decode_cpu_s:.1f})\n"
        f"  {run.videos / run.wall_s:.3f} videos/s, {run.video_s / run.wall_s:.1f} hours of video"
        f" per hour ({run.video_s / 3600:.3f} h in {run.wall_s:.1f} s; one hour in "
        f"{hour_wall:.0f} s wall, {hour_cpu:.0f} CPU s)\n"
        f"  wall: model {_share(run.stage_wall.get('model', 0), run.wall_s)}, writer "
        f"{_share(run.stage_wall.get('writer', 0), run.wall_s)}, waiting (decode, rows) "
        f"{_share(waiting, run.wall_s)}\n"
        f"  CPU: decode {_share(run.decode_cpu_s, total_cpu)}, model "
        f"{_share(run.stage_cpu.get('model', 0), total_cpu)}, writer "
        f"{_share(run.stage_cpu.get('writer', 0), total_cpu)}, rest of the main process "
        f"{_share(rest_cpu, total_cpu)}\n"
        f"  model-only bound: {bound_units_s:.1f} units/s = {bound_videos_s:.3f} videos/s = "
        f"{bound_hours:.0f} hours of video per hour; end to end "
        f"{100 * run.units / run.wall_s / bound_units_s:.0f}% of it"
    )


def _share(seconds: float, total: float) -> str:
    return f"{seconds:.1f} s ({100 * seconds / total:.0f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="one long video instead of clips")
    parser.add_argument("--file", type=Path, help="long mode: this file instead of a generated")
    parser.add_argument("--long-s", type=float, default=180.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hanet-speed")
    parser.add_argument("--arch", default="ViT-B-32", help="short mode, random weights")
    parser.add_argument("--checkpoint", type=Path, help="default: random --arch (short), demo")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="decoder threads (0: FFmpeg's)")
    parser.add_argument("--thread-type", default=SegmentCfg.thread_type)
    parser.add_argument("--all-frames", action="store_true", help="skip_nonref off")
    parser.add_argument("--decode-only", action="store_true", help="also time decoding alone")
    parser.add_argument("--piece-s", type=float, default=SegmentCfg.piece_s, help="0: none")
    parser.add_argument("--hwaccel", choices=HWACCELS, default=SegmentCfg.hwaccel)
    parser.add_argument("--no-deblock", action="store_true", help="skip the in-loop filter")
    parser.add_argument("--device", default="cpu", help="the model's device (cuda: the GPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    segments = SegmentCfg(
        skip_nonref=not args.all_frames,
        threads=args.threads,
        thread_type=args.thread_type,
        piece_s=args.piece_s,
        hwaccel=args.hwaccel,
        deblock=not args.no_deblock,
    )
    if args.long:
        files = [args.file or args.work / f"long-1280x720-{args.long_s:g}s.mp4"]
        if not files[0].exists():
            print(f"writing {files[0]} ...", flush=True)
            write_long_video(files[0], args.long_s)
        model = load_checkpoint(args.checkpoint or DEMO_CHECKPOINT)
    else:
        files = [args.work / f"clip{i:03d}.mp4" for i in range(args.videos)]
        missing = [f for f in files if not f.exists()]
        with ProcessPoolExecutor() as pool:
            list(pool.map(write_video, missing))
        model = load_checkpoint(args.checkpoint) if args.checkpoint else create_model(args.arch)
    model = model.to(args.device)
    seconds, what = describe(files[0])
    where = (
        torch.cuda.get_device_name(model.device)
        if model.device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    choice = process_hwaccel(args.hwaccel)
    print(
        f"{model.cfg.name}, T={model.cfg.max_frames}, {len(files)} x {seconds:.0f} s {what}, "
        f"batch {args.batch}, {args.workers} decoding processes, decoder threads "
        f"{args.threads or 'auto'} ({args.thread_type}), skip_nonref {segments.skip_nonref}, "
        f"pieces of {segments.piece_s:g} s, "
        f"{where}\n  hardware decoding {args.hwaccel!r}: {choice.device} ({choice.reason})",
        flush=True,
    )
    if args.decode_only:
        report_decode_only(files[0], model, segments)
    cfg = IndexingCfg(batch_size=args.batch, decode_workers=args.workers, segments=segments)
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.work) as root:
            runs.append(index_files(files, model, cfg, Path(root)))
        seconds_per_unit = runs[-1].video_s / runs[-1].units
        bound = model_bound(model, args.batch, seconds_per_unit)
        report(runs[-1], bound, f"run {n + 1}")
    if len(runs) > 1:
        median = statistics.median
        print(
            f"median of {len(runs)}: {median(r.wall_s for r in runs):.1f} s wall, "
            f"{median(r.cpu_s + r.decode_cpu_s for r in runs):.1f} CPU s"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main process {peak:.0f} MiB, largest decoding process {peak_children:.0f}")


if __name__ == "__main__":
    main()
