"""``hanet synth``: a procedural text-video corpus of real H.264 files with captions.

Designed so that each HANet level is needed: entities (8 shapes x 8 colours x 2 sizes, 1 to 3
per video, varied backgrounds), actions (12, including mirrored pairs that one averaged frame
cannot tell apart), events (one or two actions in sequence, so order matters), captions from
several templates and synonyms with every word's part of speech known, and a compositional test
split whose (colour, shape, action) combinations never occur in training.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from corpus.captions import captions_for
from corpus.scene import (
    ACTIONS,
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    Step,
    SynthVideo,
    Thing,
    place,
    render,
)

log = logging.getLogger(__name__)

FPS = 8
FRAMES = 16  # 2 seconds
MANIFEST = "manifest.json"
FORMAT = "hanet-dataset"


def held_out_triples(seed: int, per_action: int = 3) -> set[tuple[str, str, str]]:
    """(colour, shape, action) combinations kept out of training for the compositional split."""
    rng = np.random.default_rng(seed + 7919)
    held = set()
    for action in ACTIONS:
        combos = [
            (c, s) for c in COLOURS for s in SHAPES if not (s == "circle" and action == "rotate")
        ]
        for i in rng.choice(len(combos), size=per_action, replace=False):
            held.add((*combos[i], action))
    return held


def _pick_actions(rng: np.random.Generator, same_thing: bool, count: int) -> list[str]:
    while True:
        acts = [str(a) for a in rng.choice(ACTIONS, size=count)]
        if count == 2 and same_thing and (acts[0] == "disappear" or acts[1] == "appear"):
            continue  # nothing can be seen doing it
        if count == 2 and acts[0] == acts[1] and (same_thing or acts[0] == "still"):
            continue
        return acts


def _make_scene(index: int, seed: int, held: set, compositional: bool) -> SynthVideo:
    """A random scene; ``compositional`` scenes use a held-out triple for their first actor,
    the others avoid every held-out triple."""
    rng = np.random.default_rng([seed, index])
    while True:
        steps_n = int(rng.integers(1, 3))
        same = steps_n == 2 and rng.random() < 0.3
        actions = _pick_actions(rng, same, steps_n)
        actors = 1 if steps_n == 1 or same else 2
        extra = int(rng.integers(0, 4 - actors))  # 1 to 3 things in all
        looks = [
            (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(SIZES))))
            for _ in range(actors + extra)
        ]
        if compositional:
            colour, shape, action = sorted(held)[int(rng.integers(len(held)))]
            looks[0] = (colour, shape, looks[0][2])
            actions[0] = action
        own = [[actions[0]] + (actions[1:] if same else [])]
        own += [[actions[1]]] if actors == 2 else []
        own += [["still"]] * extra
        triples = {(looks[i][0], looks[i][1], a) for i, acts in enumerate(own) for a in acts}
        if any(s == "circle" and "rotate" in own[i] for i, (_, s, _) in enumerate(looks)):
            continue  # a rotating circle looks still
        if len(set(looks)) < len(looks):
            continue  # two identical things could not be told apart in a caption
        if bool(triples & held) != compositional:
            continue
        break
    centres = place([lk[2] for lk in looks], own, rng)
    things = [Thing(c, s, z, x, y) for (c, s, z), (x, y) in zip(looks, centres, strict=True)]
    half = FRAMES // 2
    if steps_n == 1:
        steps = [Step(0, actions[0], 0, FRAMES)]
    else:
        steps = [Step(0, actions[0], 0, half), Step(0 if same else 1, actions[1], half, FRAMES)]
    steps += [Step(i, "still", 0, FRAMES) for i in range(actors, actors + extra)]
    background = str(rng.choice(BACKGROUNDS))
    return SynthVideo(f"synth{index:06d}", things, steps, background, "", seed)


def plan_corpus(count: int, seed: int) -> list[SynthVideo]:
    """The scenes of a corpus with their splits: 8% compositional, the rest 80/10/10
    train/val/test."""
    held = held_out_triples(seed)
    rng = np.random.default_rng([seed, 0])
    draws = rng.random(count)
    videos = []
    for i, u in enumerate(draws):
        compositional = u < 0.08
        split = (
            "compositional"
            if compositional
            else "train"
            if u < 0.08 + 0.92 * 0.8
            else "val"
            if u < 0.08 + 0.92 * 0.9
            else "test"
        )
        scene = _make_scene(i, seed, held, compositional)
        videos.append(
            SynthVideo(scene.id, scene.things, scene.steps, scene.background, split, seed)
        )
    return videos


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """H.264 (yuv420p) MP4 via PyAV, written to a temporary name and renamed when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        stream.codec_context.thread_count = 1  # parallelism comes from worker processes
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)


def _render_and_write(args: tuple[SynthVideo, str]) -> str:
    video, folder = args
    path = Path(folder) / f"{video.id}.mp4"
    if not path.exists():
        rng = np.random.default_rng([video.seed, int(video.id[5:]), 3])
        write_mp4(path, render(video.things, video.steps, video.background, FRAMES, rng))
    return video.id


def _entry(video: SynthVideo) -> dict:
    return {
        "id": video.id,
        "path": f"videos/{video.id}.mp4",
        "split": video.split,
        "duration_s": FRAMES / FPS,
        "things": [vars(t) for t in video.things],
        "events": [
            {"thing": s.thing, "action": s.action, "start_s": s.start / FPS, "end_s": s.end / FPS}
            for s in video.steps
        ],
        **captions_for(video),
    }


def generate_corpus(
    out_dir: Path, count: int, seed: int, workers: int | None = None, progress: bool = True
) -> Path:
    """Write ``count`` videos and the manifest under ``out_dir``; files already there (same
    seed) are kept. Returns the manifest's path."""
    from tqdm import tqdm

    videos = plan_corpus(count, seed)
    folder = out_dir / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(v, str(folder)) for v in videos]
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = pool.map(_render_and_write, jobs, chunksize=16)
        for _ in tqdm(done, total=len(jobs), desc="synth", unit="video", disable=not progress):
            pass
    manifest = {
        "format": FORMAT,
        "version": 1,
        "name": f"synth-{count}-seed{seed}",
        "seed": seed,
        "held_out": sorted(map(list, held_out_triples(seed))),
        "videos": [_entry(v) for v in videos],
    }
    path = out_dir / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return path


def iter_captions(manifest: dict) -> Iterator[tuple[str, dict]]:
    for video in manifest["videos"]:
        for caption in video["captions"]:
            yield video["id"], caption
