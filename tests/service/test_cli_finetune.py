"""Fine-tuning on windows of long videos, as a user runs it: python -m corpus.windows, then
hanet train --from-checkpoint --served-frames, then hanet eval --served-frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corpus.datasets import VideoItem, decode_split, load_generic
from corpus.long import generate_long_corpus
from corpus.synth import generate_corpus
from corpus.windows import generate_windows
from indexer.decode import decode_video
from indexer.embedder import motion_partners
from indexer.segments import decode_segments
from model import load_checkpoint
from service.cli import app

pytestmark = pytest.mark.slow  # trains

DEMO = Path(__file__).resolve().parents[2] / "model" / "weights" / "hanet-tiny-demo.pt"
runner = CliRunner()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    """A long corpus (three videos of about half a minute) and its windows mixed with forty
    short clips."""
    root = tmp_path_factory.mktemp("finetune")
    generate_long_corpus(root / "long", 3, 19, 2, progress=False, min_minutes=0.4, max_minutes=0.5)
    generate_corpus(root / "short", 40, 0, workers=2, progress=False)
    generate_windows(root / "long", root / "win", 2, progress=False, mix=root / "short")
    return root / "long", root / "win"


def test_served_frames_are_the_indexers(corpora) -> None:
    long_dir, windows = corpora
    items = load_generic(windows).videos
    window = next(v for v in items if v.path.parent == windows / "videos")  # cut from a long one
    short = next(v for v in items if v.path.parent != windows / "videos")  # a mixed-in clip
    served = decode_split([window, short], 8, 32, progress=False, served=True)
    assert served.following is not None and not served.failed
    (segment,) = decode_segments(window.path, 8, 32).segments
    n = len(segment.frames)
    assert np.array_equal(served.frames[0, :n], segment.frames)
    assert np.array_equal(served.following[0, :n], motion_partners(segment))
    assert np.array_equal(served.times[0, :n], segment.timestamps_s)
    clip = decode_video(short.path, 8, 32)  # a training clip: what decode_video reads
    assert np.array_equal(served.frames[1], clip.frames)
    assert np.array_equal(served.following[1], np.concatenate([clip.frames[1:], clip.frames[-1:]]))
    whole = next(long_dir.glob("videos/*.mp4"))  # longer than one unit: refused with the reason
    item = VideoItem("whole", whole, "train", window.captions)
    failed = decode_split([item], 8, 32, progress=False, served=True).failed
    assert "not one served unit" in failed["whole"]


def test_fine_tune_on_windows_then_eval(corpora, tmp_path) -> None:
    _, windows = corpora
    out, work = tmp_path / "ft.pt", tmp_path / "w"
    args = ["--data", str(windows), "--out", str(out), "--work-dir", str(work)]
    tuning = ["--from-checkpoint", str(DEMO), "--served-frames", "--epochs", "1"]
    result = runner.invoke(app, ["train", *args, *tuning, "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    start, tuned = load_checkpoint(DEMO), load_checkpoint(out)
    assert tuned.vocab == start.vocab and tuned.cfg.max_frames == start.cfg.max_frames
    assert sorted(p.name.endswith("-served.npz") for p in (work / "cache").iterdir()) == [True] * 2
    report = tmp_path / "eval.json"
    eval_args = ["eval", "--checkpoint", str(out), "--data", str(windows), "--split", "test"]
    result = runner.invoke(app, [*eval_args, "--served-frames", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(report.read_text())["t2v"]["R@1"] <= 100
    both = ["--from-checkpoint", str(DEMO), "--pretrained", "x"]
    result = runner.invoke(app, ["train", *args, *both])
    assert result.exit_code != 0 and "give one of" in result.output
