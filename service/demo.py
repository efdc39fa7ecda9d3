"""``hanet demo`` for now: the search service, the trained demo model and the synthetic corpus
are later issues, so this runs the real parts that exist end to end and says so.

It renders a few small videos of moving shapes, encodes them as H.264 MP4 files with PyAV,
decodes them back, runs the HANet video branch of the ``tiny`` architecture (random weights: no
trained model is bundled yet), encodes a few queries with the text branch, and prints every
alignment level's score and the matched moment."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import torch

log = logging.getLogger(__name__)

_FPS = 8
_SIZE = 96
_SHAPES = {
    "a red square moves right": ((220, 40, 40), +1, 0),
    "a blue square moves left": ((40, 60, 220), -1, 0),
    "a green square moves down": ((40, 200, 60), 0, +1),
}


def _render(color: tuple[int, int, int], dx: int, dy: int, frames: int = 24) -> np.ndarray:
    video = np.full((frames, _SIZE, _SIZE, 3), 30, dtype=np.uint8)
    for t in range(frames):
        x = 36 + dx * (t * 2 - frames)
        y = 36 + dy * (t * 2 - frames)
        video[t, max(y, 0) : max(y + 24, 0), max(x, 0) : max(x + 24, 0)] = color
    return video


def _write_mp4(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=_FPS)
        stream.width, stream.height, stream.pix_fmt = _SIZE, _SIZE, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _read_mp4(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def run_demo(out_dir: Path = Path("hanet-data/demo-videos")) -> None:
    from model import create_model, frames_to_pixels

    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = create_model("tiny")
    pixels, paths = [], []
    for i, (caption, (color, dx, dy)) in enumerate(_SHAPES.items()):
        path = out_dir / f"video_{i}.mp4"
        _write_mp4(path, _render(color, dx, dy))
        frames = _read_mp4(path)
        pick = np.round(np.linspace(0, len(frames) - 1, model.cfg.max_frames)).astype(int)
        pixels.append(frames_to_pixels(frames[pick], model.preprocess))
        paths.append(path)
        print(f"wrote and decoded {path} ({len(frames)} frames) - {caption!r}")
    mask = torch.ones(len(pixels), model.cfg.max_frames, dtype=torch.bool)
    queries = list(_SHAPES)
    with torch.inference_mode():
        video = model.encode_video(torch.stack(pixels), mask)
        text = model.encode_text(queries)
        scores = model.similarity(text, video)
        moments = model.best_action_segment(text, video)
    print("\nHANet scores (tiny architecture, RANDOM weights: rankings are not meaningful yet;")
    print("the trained demo model, the indexer and the search service are still to come)\n")
    for qi, query in enumerate(queries):
        print(f"query: {query!r}")
        for vi, path in enumerate(paths):
            seg = int(moments[qi, vi])
            start, end = (int(x) for x in video.action_spans[vi, seg])
            levels = "  ".join(f"{k}={float(v[qi, vi]):+.3f}" for k, v in scores.items()
                               if k not in {"embedding", "concept"})  # fmt: skip
            print(f"  {path.name}: {levels}  moment=frames {start}-{end}")
