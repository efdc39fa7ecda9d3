"""Indexing one long video (issue 17): wall time, peak memory and how progress advances.

Makes (once; reused on later runs) a one-hour 1280x720 H.264 file in ``--work``: a ten-minute
source written with PyAV (moving gradients and a moving box, a hard cut to a new palette every
17-23 s), or a copy of an existing one (``--source``), remuxed ``--copies`` times into one file
by stream copy with shifted timestamps (no re-encode). Then it indexes that file with the real
job in child processes, as an operator would: `hanet index add FILE`, then `hanet index run`,
with HANET_DATA_DIR a fresh folder in ``--work`` and the demo checkpoint. Meanwhile this process
reads the video's row (SQLite, read-only) every ``--poll-s`` seconds and prints the progress the
service shows (``indexed_s`` / ``duration_s``) with the indexer's resident memory.

At the end, per run: wall time, times real time, segments indexed, peak RSS and how progress
advanced. Peak RSS is given three ways: ``wait4``'s ``ru_maxrss`` of `hanet index run` (the
largest peak of ONE process among it and the descendants it waited for, i.e. its decode
workers: not their sum), ``RUSAGE_CHILDREN`` of this process after it (the same, over every
child this process waited for: `hanet index add` too), and the largest sums over the indexer's
process tree seen in the polls: of RSS (a page shared by the forked workers counted in each) and
of PSS (shared pages shared out: what the tree held), sampled, so a short peak can be missed.

    .venv/bin/python benchmarks/long_video.py
    .venv/bin/python benchmarks/long_video.py --source /tmp/seg_bench/long720.mp4 --runs 3
    .venv/bin/python benchmarks/long_video.py --work /tmp/lv --source-s 30 --copies 2 \\
        --width 320 --height 180     # a quick smoke run
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HANET_CLI = [sys.executable, "-c", "from service.cli import app; app()"]  # this checkout's
DEMO_CHECKPOINT = ROOT / "model" / "weights" / "hanet-tiny-demo.pt"


def write_source(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> list:
    """A ``seconds`` long H.264 file of moving sine gradients with a moving box; each shot
    (17-23 s) has its own palette, direction and speed, so shots meet at hard cuts. Returns
    the cut times, seconds."""
    rng = np.random.default_rng(0)
    cuts, t = [], 0.0
    while (t := t + rng.uniform(17, 23)) < seconds - 1:
        cuts.append(round(t * fps))
    bounds = [0, *cuts, round(seconds * fps)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    box = max(8, height // 5)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for first, end in zip(bounds, bounds[1:], strict=False):
            base = rng.uniform(30, 220, size=3).astype(np.float32)
            amp = rng.uniform(20, 60, size=3).astype(np.float32)
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(20, 80)
            colour = rng.integers(0, 256, size=3, dtype=np.uint8)
            phase = (np.cos(angle) * xx + np.sin(angle) * yy) / 200.0  # (H, W)
            sin_p, cos_p = np.sin(phase), np.cos(phase)
            for i in range(first, end):
                shift = i / fps * speed / 100.0  # sin(phase + shift), from two fixed arrays
                wave = sin_p * np.cos(shift) + cos_p * np.sin(shift)
                image = np.clip(base + amp * wave[..., None], 0, 255).astype(np.uint8)
                x = int((i / fps * speed * 3) % (width - box))
                y = int((i / fps * speed) % (height - box))
                image[y : y + box, x : x + box] = colour
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return [c / fps for c in cuts]


def concatenate(source: Path, out: Path, copies: int) -> None:
    """``copies`` times ``source``'s video stream, one after another, into ``out`` by stream
    copy: each copy's packets shifted by the source's duration (no re-encode)."""
    tmp = out.with_suffix(".tmp" + out.suffix)
    with av.open(str(source)) as src, av.open(str(tmp), "w") as dst:
        stream = src.streams.video[0]
        if stream.duration is None:
            raise SystemExit(f"{source}: the video stream declares no duration")
        copy = dst.add_stream_from_template(stream)
        for k in range(copies):
            shift = k * stream.duration  # in stream.time_base
            src.seek(0, stream=stream)
            for packet in src.demux(stream):
                if packet.dts is None:  # the demuxer's end-of-stream packet
                    continue
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                packet.stream = copy
                dst.mux(packet)
    tmp.rename(out)


def probe(path: Path) -> tuple[str, int, int, float]:
    """(codec, width, height, duration_s) of a file's video stream."""
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        duration = float(s.duration * s.time_base) if s.duration else container.duration / 1e6
        return s.codec_context.name, s.width, s.height, duration


def long_file(args: argparse.Namespace) -> Path:
    """The long file in ``args.work``: reused when present, else made (see the module's doc)."""
    name = f"long-{args.width}x{args.height}-{args.copies}x{args.source_s:g}s.mp4"
    out = args.work / name
    if out.exists():
        print(f"reusing {out}")
        return out
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / f"source-{args.width}x{args.height}-{args.source_s:g}s.mp4"
    if not source.exists():
        if args.source is not None:
            codec, w, h, seconds = probe(args.source)
            if (codec, w, h) != ("h264", args.width, args.height):
                raise SystemExit(f"{args.source} is {codec} {w}x{h}, not h264 {args.width}x...")
            if abs(seconds - args.source_s) > 1:
                raise SystemExit(f"{args.source} lasts {seconds:.1f} s, not {args.source_s:g}")
            shutil.copyfile(args.source, source)
            print(f"copied {args.source} -> {source}")
        else:
            print(f"writing a {args.source_s:g} s {args.width}x{args.height} source {source} ...")
            began = time.perf_counter()
            write_source(source, args.source_s, args.width, args.height)
            print(f"  written in {time.perf_counter() - began:.0f} s")
    began = time.perf_counter()
    concatenate(source, out, args.copies)
    codec, w, h, seconds = probe(out)
    took = time.perf_counter() - began
    print(f"remuxed {args.copies} copies -> {out}: {codec} {w}x{h}, {seconds:.1f} s ({took:.1f} s)")
    return out


def tree_memory_mb(root: int) -> dict[int, tuple[float, float]]:
    """(RSS, PSS) in MB of ``root`` and of each of its live descendants, by pid (from /proc;
    PSS shares each shared page among the processes that map it, so PSS adds up)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    out = {}
    for pid in tree:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        kb = {line.split(":")[0]: int(line.split()[1]) for line in lines[1:] if ":" in line}
        if "Rss" in kb:
            out[pid] = (kb["Rss"] / 1024, kb.get("Pss", 0) / 1024)
    return out


@dataclass
class Run:
    """What one run observed."""

    wall_s: float = 0.0
    status: str = ""
    duration_s: float = 0.0
    segments: int = 0
    maxrss_run_mb: float = 0.0  # wait4 of `hanet index run`
    maxrss_children_mb: float = 0.0  # RUSAGE_CHILDREN after it
    tree_peak_mb: float = 0.0  # the largest sampled RSS sum over the indexer's process tree
    tree_pss_peak_mb: float = 0.0  # the same for PSS (shared pages shared out)
    process_peaks_mb: dict[int, float] = field(default_factory=dict)  # sampled, per pid
    progress: list[tuple[float, float]] = field(default_factory=list)  # (at_s, indexed_s)
    polls: int = 0
    misses: int = 0  # polls that found the database busy or not there yet


def read_row(db: Path) -> tuple | None:
    """(status, indexed_s, duration_s, segments) of the newest video, read-only."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5) as conn:
        return conn.execute(
            "SELECT status, indexed_s, duration_s, segments FROM videos ORDER BY id DESC LIMIT 1"
        ).fetchone()


def run_child(command: list[str], env: dict, log_path: Path) -> tuple[subprocess.Popen, object]:
    log = log_path.open("a")
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return child, log


def reap(child: subprocess.Popen, block: bool) -> resource.struct_rusage | None:
    """The child's rusage once it has exited (None while it runs, unless ``block``)."""
    pid, status, usage = os.wait4(child.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage


def index_once(video: Path, data: Path, args: argparse.Namespace) -> Run:
    """`hanet index add` then `hanet index run` on ``video`` in a fresh ``data`` folder, the
    row polled meanwhile."""
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = {
        **os.environ,
        "HANET_DATA_DIR": str(data),
        "HANET_CHECKPOINT": str(args.checkpoint),
        "HANET_DEVICE": args.device,
    }
    log_path = data / "indexer.log"
    adder, log = run_child([*HANET_CLI, "index", "add", str(video)], env, log_path)
    reap(adder, block=True)
    log.close()
    if adder.returncode:
        raise SystemExit(f"`hanet index add` failed: see {log_path}")
    run, db = Run(), data / "hanet.sqlite3"
    began = time.perf_counter()
    child, log = run_child([*HANET_CLI, "index", "run"], env, log_path)
    next_poll_s = 0.0
    while (usage := reap(child, block=False)) is None:  # its end noticed within 50 ms
        if (at_s := time.perf_counter() - began) >= next_poll_s:
            _poll(run, db, child.pid, at_s)
            next_poll_s = max(next_poll_s + args.poll_s, at_s)  # a steady tick
        time.sleep(0.05)
    run.wall_s = time.perf_counter() - began
    log.close()
    if child.returncode:
        raise SystemExit(f"`hanet index run` exited with {child.returncode}: see {log_path}")
    run.maxrss_run_mb = usage.ru_maxrss / 1024  # Linux: kilobytes
    run.maxrss_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    run.status, _, duration_s, segments = read_row(db)
    run.duration_s, run.segments = float(duration_s or 0), int(segments or 0)
    return run


def _poll(run: Run, db: Path, pid: int, at_s: float) -> None:
    """One poll: the indexer tree's memory, then the row; a line when the progress changes."""
    memory = tree_memory_mb(pid)
    rss = sum(r for r, _ in memory.values())
    run.tree_peak_mb = max(run.tree_peak_mb, rss)
    run.tree_pss_peak_mb = max(run.tree_pss_peak_mb, sum(p for _, p in memory.values()))
    for p, (mb, _) in memory.items():
        run.process_peaks_mb[p] = max(run.process_peaks_mb.get(p, 0.0), mb)
    run.polls += 1
    try:
        row = read_row(db) if db.exists() else None
    except sqlite3.OperationalError:
        row = None
    if row is None:
        run.misses += 1
        return
    status, indexed_s, duration_s, _ = row
    if status != "processing" or indexed_s is None:
        return
    if not run.progress or run.progress[-1][1] != indexed_s:
        run.progress.append((at_s, indexed_s))
        share = indexed_s / duration_s if duration_s else float("nan")
        print(
            f"  {at_s:7.1f} s  indexed {indexed_s:7.1f} / {duration_s:.1f} s ({share:6.1%})"
            f"  indexer RSS {rss:6.0f} MB, PSS {sum(p for _, p in memory.values()):6.0f} MB"
            f" ({len(memory)} processes)",
            flush=True,
        )


def report(run: Run, n: int) -> None:
    values = [v for _, v in run.progress]
    gaps = np.diff([0.0, *(t for t, _ in run.progress)]) if run.progress else []
    workers = sorted(run.process_peaks_mb.values(), reverse=True)
    print(
        f"run {n}: {run.status}, {run.duration_s:.1f} s of video in {run.wall_s:.1f} s wall "
        f"({run.duration_s / run.wall_s:.2f}x real time), {run.segments} segments indexed\n"
        f"  peak RSS: `hanet index run` wait4 ru_maxrss {run.maxrss_run_mb:.0f} MB (the largest"
        f" one process of it and its reaped decode workers); RUSAGE_CHILDREN "
        f"{run.maxrss_children_mb:.0f} MB (every child so far, `index add` too); sampled sums "
        f"over the indexer's tree: RSS {run.tree_peak_mb:.0f} MB, PSS "
        f"{run.tree_pss_peak_mb:.0f} MB; sampled RSS per process "
        f"{', '.join(f'{mb:.0f}' for mb in workers)} MB\n"
        f"  progress: {len(set(values))} distinct indexed_s values while processing"
        + (
            f", first {values[0]:.1f} s at {run.progress[0][0]:.1f} s wall, last "
            f"{values[-1]:.1f} s at {run.progress[-1][0]:.1f} s wall, longest wait for a change "
            f"{max(gaps):.1f} s"
            if values
            else ""
        )
        + f"; {run.polls} polls ({run.misses} found no row or a busy database)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/work/bench-long/hour"))
    parser.add_argument("--source", type=Path, help="an existing source file to copy")
    parser.add_argument("--source-s", type=float, default=600.0, help="the source's length")
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    video = long_file(args)
    runs = []
    for n in range(1, args.runs + 1):
        print(f"run {n}: indexing {video.name} (data in {args.work / 'data'}) ...", flush=True)
        runs.append(index_once(video, args.work / "data", args))
        report(runs[-1], n)
    if len(runs) > 1:
        median = statistics.median
        print(
            f"median of {len(runs)}: wall {median(r.wall_s for r in runs):.1f} s, "
            f"wait4 ru_maxrss {median(r.maxrss_run_mb for r in runs):.0f} MB, sampled tree "
            f"RSS {median(r.tree_peak_mb for r in runs):.0f} MB, PSS "
            f"{median(r.tree_pss_peak_mb for r in runs):.0f} MB"
        )


if __name__ == "__main__":
    main()
