"""Segment-like windows of long videos as a short-clip corpus: training data for long-video
search (issue 17) in the format ``hanet train`` reads (``corpus.datasets.load_generic``).

A long corpus (``hanet synth --long``) is cut where the indexer would cut it: the spans of
``indexer.segment_plan.plan_segments`` (2-12 s segments at shot boundaries, 6 s windows with 3 s
overlap inside long shots, the defaults of ``SegmentCfg``) at the manifest's true shot boundaries,
so each clip is what the served path embeds as one unit when its shot detector finds the cuts.

- Captions: a window's captions are those of the events it holds. An event counts when at least
  ``min_cover`` (default half) of its frames lie inside the window; an event less covered than
  that is listed under ``partial`` without captions (the window shows too little of it for the
  caption to be a fair positive). With overlapping windows an event can count in two windows;
  every event counts in at least one, since the spans tile the video. Windows with no counted
  event (still or empty stretches, mostly) are left out: they have nothing to train on.
- Splits: a window has its video's split, so windows of val, test and compositional videos never
  reach training.
- Files: each window re-encoded as H.264 from the long video's decoded frames (PyAV), frames
  ``[start, end)`` exactly, at the long corpus's frame rate. A video is decoded once, whole, in
  memory (a 10-minute video of 96-pixel frames: about 130 MB); the encoder is the long corpus's,
  deterministic, so the same long corpus gives the same bytes.
- ``mix``: the videos of a short corpus (``hanet synth``) added with their own splits, paths
  relative to the new manifest, for training that keeps short-clip retrieval. Windows that
  show a (colour, shape, action) triple the short corpus holds out are then left out, so that
  its compositional split stays unseen.

Run as ``python -m corpus.windows LONG_DIR OUT_DIR [--mix SHORT_DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from corpus.long import write_mp4
from indexer.segment_plan import SegmentCfg, plan_segments

MANIFEST = "manifest.json"
FORMAT = "hanet-dataset"
LONG_FORMAT = "hanet-long-dataset"
MIN_COVER = 0.5


@dataclass(frozen=True)
class Window:
    """Frames ``[start, end)`` of long video ``video``; ``events``: indexes of the video's
    events that count (their captions are the window's), ``partial``: those that do not."""

    id: str
    video: str
    split: str
    start: int
    end: int
    events: tuple[int, ...]
    partial: tuple[int, ...]


def _frames(seconds: float, fps: float) -> int:
    return round(seconds * fps)


def plan_windows(
    video: dict, fps: float, cfg: SegmentCfg = SegmentCfg(), min_cover: float = MIN_COVER
) -> list[Window]:
    """The windows of one long video (an entry of a long manifest) with at least one event."""
    if not 0 < min_cover <= 1:
        raise ValueError(f"min_cover must be in (0, 1], not {min_cover}")
    cuts = [shot["start_s"] for shot in video["shots"][1:]]
    spans = plan_segments(cuts, video["duration_s"], cfg)
    events = [(_frames(e["start_s"], fps), _frames(e["end_s"], fps)) for e in video["events"]]
    windows = []
    for a, b in spans:
        start, end = _frames(a, fps), min(_frames(b, fps), video["frames"])
        inside, partial = [], []
        for k, (s, e) in enumerate(events):
            overlap = min(e, end) - max(s, start)
            if overlap > 0:
                (inside if overlap >= min_cover * (e - s) else partial).append(k)
        if inside:
            name = f"{video['id']}w{start:06d}-{end:06d}"
            windows.append(
                Window(name, video["id"], video["split"], start, end, tuple(inside), tuple(partial))
            )
    return windows


def _shows(video: dict, window: Window, triples: set[tuple[str, ...]]) -> bool:
    """Whether an event the window counts has a thing doing (or, still, being) one of these
    (colour, shape, action) triples."""
    for k in window.events:
        event = video["events"][k]
        things = video["shots"][event["shot"]]["things"]
        doing = [(a["thing"], a["action"]) for a in event["actions"]]
        doing += [(t, "still") for t in event.get("still", [])]
        if any((things[t]["colour"], things[t]["shape"], act) in triples for t, act in doing):
            return True
    return False


def window_entry(window: Window, video: dict, fps: float) -> dict:
    """The window in the short-clip manifest: ``captions`` (each with ``event``, the index in
    ``events``), ``events`` with spans relative to the window (clipped to it) and ``covered``,
    and ``source`` (the long video and the window's span in it)."""
    t0 = window.start / fps
    duration = (window.end - window.start) / fps
    events, captions = [], []
    for n, k in enumerate(window.events):
        event = video["events"][k]
        start, end = max(event["start_s"], t0), min(event["end_s"], window.end / fps)
        events.append(
            {
                "start_s": round(start - t0, 6),
                "end_s": round(end - t0, 6),
                "covered": round((end - start) / (event["end_s"] - event["start_s"]), 6),
                "source_event": k,
                "actions": event["actions"],
            }
        )
        captions += [{**c, "event": n} for c in event["captions"]]
    return {
        "id": window.id,
        "path": f"videos/{window.id}.mp4",
        "split": window.split,
        "duration_s": duration,
        "frames": window.end - window.start,
        "source": {"video": window.video, "start_s": t0, "end_s": window.end / fps},
        "events": events,
        "partial": list(window.partial),
        "captions": captions,
    }


def _decode_all(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def _cut(args: tuple[str, list[Window], str, float]) -> str:
    """Write the windows of one long video that are not on disk yet."""
    source, windows, folder, fps = args
    todo = [w for w in windows if not (Path(folder) / f"{w.id}.mp4").exists()]
    if todo:
        frames = _decode_all(Path(source))
        for w in todo:
            if w.end > len(frames):
                raise ValueError(f"{source}: {len(frames)} frames, window {w.id} needs {w.end}")
            write_mp4(Path(folder) / f"{w.id}.mp4", iter([frames[w.start : w.end]]), int(fps))
    return source


def _mixed(short_dir: Path, out_dir: Path) -> list[dict]:
    """The short corpus's videos with paths relative to ``out_dir``."""
    manifest = json.loads((short_dir / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{short_dir} is not a {FORMAT} corpus")
    rel = Path(os.path.relpath(short_dir.resolve(), out_dir.resolve()))
    return [{**v, "path": str(rel / v["path"])} for v in manifest["videos"]]


def generate_windows(
    long_dir: Path,
    out_dir: Path,
    workers: int | None = None,
    progress: bool = True,
    cfg: SegmentCfg = SegmentCfg(),
    min_cover: float = MIN_COVER,
    mix: Path | None = None,
) -> Path:
    """Cut the long corpus under ``long_dir`` into windows under ``out_dir`` (files already there
    are kept) and write their manifest, with ``mix``'s short videos added when given. Returns
    the manifest's path."""
    from tqdm import tqdm

    long_dir, out_dir = Path(long_dir), Path(out_dir)
    source = json.loads((long_dir / MANIFEST).read_text())
    if source.get("format") != LONG_FORMAT:
        raise ValueError(f"{long_dir} is not a {LONG_FORMAT} corpus (hanet synth --long)")
    fps = float(source["fps"])
    plans = [(v, plan_windows(v, fps, cfg, min_cover)) for v in source["videos"]]
    if mix is not None:  # the short corpus's compositional split stays unseen in training
        held = {tuple(t) for t in json.loads((Path(mix) / MANIFEST).read_text())["held_out"]}
        plans = [(v, [w for w in ws if not _shows(v, w, held)]) for v, ws in plans]
    folder = out_dir / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(long_dir / v["path"]), ws, str(folder), fps) for v, ws in plans if ws]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        done = pool.map(_cut, jobs)
        for _ in tqdm(done, total=len(jobs), desc="windows", unit="video", disable=not progress):
            pass
    videos = [window_entry(w, v, fps) for v, ws in plans for w in ws]
    if mix is not None:
        videos += _mixed(Path(mix), out_dir)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "name": f"windows-{source['name']}" + (f"+{Path(mix).name}" if mix else ""),
        "seed": source.get("seed"),
        "held_out": source.get("held_out", []),
        "windows": {
            "from": str(long_dir),
            "fps": fps,
            "min_cover": min_cover,
            "min_s": cfg.min_s,
            "max_s": cfg.max_s,
            "window_s": cfg.window_s,
            "overlap_s": cfg.overlap_s,
            "mix": str(mix) if mix else None,
        },
        "videos": videos,
    }
    path = out_dir / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m corpus.windows", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("long_dir", type=Path, help="a long corpus (hanet synth --long)")
    parser.add_argument("out_dir", type=Path, help="folder for the clips and manifest.json")
    parser.add_argument("--mix", type=Path, help="a short corpus (hanet synth) to add")
    parser.add_argument("--min-cover", type=float, default=MIN_COVER)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    path = generate_windows(
        args.long_dir, args.out_dir, args.workers, min_cover=args.min_cover, mix=args.mix
    )
    videos = json.loads(path.read_text())["videos"]
    splits: dict[str, int] = {}
    for v in videos:
        splits[v["split"]] = splits.get(v["split"], 0) + 1
    print(f"wrote {path}: {len(videos)} clips, {splits}")


if __name__ == "__main__":
    main()
