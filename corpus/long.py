"""``hanet synth --long``: long procedural videos (minutes each) with the true span of every
event, for moment retrieval. This module renders the plans of ``corpus.long_plan`` (shots,
events, still and empty stretches, splits: see there), encodes them as MP4 files and writes the
manifest with every event's span and captions; ``iter_moments`` reads the queries back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from corpus.captions import captions_for
from corpus.long_plan import (
    EVENT_FRAMES,
    LongVideo,
    Segment,
    Shot,
    plan_long_corpus,
    plan_long_video,
)
from corpus.scene import CANVAS, Step, SynthVideo, render
from corpus.synth import FPS, held_out_triples

__all__ = [
    "EVENT_FRAMES",
    "FORMAT",
    "MANIFEST",
    "LongVideo",
    "Segment",
    "Shot",
    "generate_long_corpus",
    "iter_moments",
    "manifest_entry",
    "plan_long_corpus",
    "plan_long_video",
    "render_segments",
    "write_mp4",
]

MANIFEST = "manifest.json"
FORMAT = "hanet-long-dataset"


def render_segments(video: LongVideo) -> Iterator[np.ndarray]:
    """The video's frames, one (n, CANVAS, CANVAS, 3) uint8 array per segment. Each segment is
    rendered with its shot's steps shifted to its start, so finished steps add up as in one
    render of the whole shot; a stretch is one frame repeated (nothing moves in it)."""
    for seg in video.segments:
        shot = video.shots[seg.shot]
        t0, n = seg.start - shot.start, seg.end - seg.start
        steps = [Step(s.thing, s.action, s.start - t0, s.end - t0) for s in shot.steps]
        rng = np.random.default_rng([video.seed, video.index, seg.shot, 3])  # same noise per shot
        if seg.kind == "event":
            yield render(list(shot.things), steps, shot.background, n, rng)
        else:
            first = render(list(shot.things), steps, shot.background, 1, rng)
            yield np.broadcast_to(first, (n, *first.shape[1:]))


def write_mp4(path: Path, chunks: Iterator[np.ndarray], fps: int = FPS) -> None:
    """H.264 (yuv420p) MP4 from chunks of RGB frames, encoded as they come (a 10-minute video
    is never all in memory), written to a temporary name and renamed when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = CANVAS, CANVAS, "yuv420p"
        # x264's SIMD code gave different bytes from run to run for the same frames (seen with
        # AVX-512); its plain C code does not, so one seed gives the same files every time.
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "asm=0"}
        stream.codec_context.thread_count = 1  # parallelism comes from worker processes
        for chunk in chunks:
            for image in chunk:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


def _render_and_write(args: tuple[LongVideo, str]) -> str:
    video, folder = args
    path = Path(folder) / f"{video.id}.mp4"
    if not path.exists():
        write_mp4(path, render_segments(video))
    return video.id


def _event_scene(video: LongVideo, number: int, seg: Segment) -> SynthVideo:
    """The event as a synth video of its own, for ``captions_for``: its actors first (the
    first actor is thing 0, as captions expect), then its still things; frames from 0."""
    shot = video.shots[seg.shot]
    order = list(dict.fromkeys(s.thing for s in seg.steps)) + list(seg.still)
    local = {k: n for n, k in enumerate(order)}
    t0, length = seg.start - shot.start, seg.end - seg.start
    steps = [Step(local[s.thing], s.action, s.start - t0, s.end - t0) for s in seg.steps]
    steps += [Step(local[k], "still", 0, length) for k in seg.still]
    things = [shot.things[k] for k in order]
    name = f"synth{video.index:05d}{number:05d}"  # captions seed from the digits
    return SynthVideo(name, things, steps, shot.background, video.split, video.seed)


def _span(start: int, end: int) -> dict:
    return {"start_s": start / FPS, "end_s": end / FPS}


def manifest_entry(video: LongVideo) -> dict:
    """The video in the manifest: its shots, its events with their captions, its stretches."""
    events, idle = [], []
    for seg in video.segments:
        shot = video.shots[seg.shot]
        cut = seg.start == shot.start and seg.start > 0
        span = {**_span(seg.start, seg.end), "shot": seg.shot, "cut_before": cut}
        if seg.kind != "event":
            idle.append({**span, "kind": seg.kind})
            continue
        actions = [
            {
                "thing": s.thing,
                "action": s.action,
                **_span(shot.start + s.start, shot.start + s.end),
            }
            for s in seg.steps
        ]
        scene = _event_scene(video, len(events), seg)
        events.append({**span, "actions": actions, "still": list(seg.still), **captions_for(scene)})
    shots = [
        {**_span(s.start, s.end), "background": s.background, "things": [vars(t) for t in s.things]}
        for s in video.shots
    ]
    return {
        "id": video.id,
        "path": f"videos/{video.id}.mp4",
        "split": video.split,
        "duration_s": video.frames / FPS,
        "frames": video.frames,
        "shots": shots,
        "events": events,
        "idle": idle,
    }


def generate_long_corpus(
    out_dir: Path,
    count: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    min_minutes: float = 2.0,
    max_minutes: float = 10.0,
) -> Path:
    """Write ``count`` long videos and the manifest under ``out_dir``; files already there
    (same seed) are kept. Returns the manifest's path."""
    from tqdm import tqdm

    videos = plan_long_corpus(count, seed, min_minutes, max_minutes)
    folder = out_dir / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(v, str(folder)) for v in videos]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        done = pool.map(_render_and_write, jobs)
        for _ in tqdm(done, total=len(jobs), desc="synth", unit="video", disable=not progress):
            pass
    manifest = {
        "format": FORMAT,
        "version": 1,
        "name": f"long-{count}-seed{seed}",
        "seed": seed,
        "fps": FPS,
        "min_minutes": min_minutes,
        "max_minutes": max_minutes,
        "held_out": sorted(map(list, held_out_triples(seed))),
        "videos": [manifest_entry(v) for v in videos],
    }
    path = out_dir / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)
    return path


def iter_moments(
    manifest: dict, split: str | None = None
) -> Iterator[tuple[str, float, float, dict]]:
    """(video id, start_s, end_s, caption) for every caption of every event, in one split or
    all: the queries of moment retrieval and their true moments."""
    for video in manifest["videos"]:
        if split is None or video["split"] == split:
            for event in video["events"]:
                for caption in event["captions"]:
                    yield video["id"], event["start_s"], event["end_s"], caption
