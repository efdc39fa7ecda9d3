"""The procedural corpus: determinism, captions and their parts of speech, splits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from corpus.datasets import load_generic
from corpus.scene import ACTIONS, COLOURS, MIRRORED, SHAPES, SIZES
from corpus.synth import generate_corpus, held_out_triples, plan_corpus
from indexer.decode import decode_video
from model.decompose import decompose


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("synth"), 120, seed=3, workers=2, progress=False)


def test_design_covers_the_required_variety() -> None:
    assert len(SHAPES) >= 8 and len(COLOURS) >= 8 and len(SIZES) >= 2 and len(ACTIONS) >= 10
    for a, b in [
        ("move_left", "move_right"),
        ("move_up", "move_down"),
        ("grow", "shrink"),
        ("appear", "disappear"),
    ]:
        assert MIRRORED[a] == b and MIRRORED[b] == a
    assert {"rotate", "bounce", "blink", "still"} <= set(ACTIONS)


@pytest.mark.slow
def test_same_seed_same_corpus(corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path, 120, seed=3, workers=1, progress=False)
    assert json.loads(corpus.read_text()) == json.loads(again.read_text())
    a = hashlib.sha256((corpus.parent / "videos" / "synth000007.mp4").read_bytes()).hexdigest()
    b = hashlib.sha256((again.parent / "videos" / "synth000007.mp4").read_bytes()).hexdigest()
    assert a == b
    assert plan_corpus(40, 4) != plan_corpus(40, 5)


def test_captions_and_parts_of_speech(corpus: Path) -> None:
    manifest = json.loads(corpus.read_text())
    for video in manifest["videos"]:
        texts = [c["text"] for c in video["captions"]]
        assert len(texts) >= 5 and len(set(texts)) == len(texts)
        for c in video["captions"]:
            assert len(c["words"]) == len(c["pos"]) == len(c["lemmas"])
            assert c["text"] == " ".join(c["words"]).replace(" ,", ",")
            nouns = {w for w, p in zip(c["words"], c["pos"], strict=True) if p == "NOUN"}
            assert nouns & set(SHAPES), c["text"]  # every caption names a shape


def test_the_offline_tagger_agrees_with_the_generator(corpus: Path) -> None:
    """Real captions have no known tags; on synthetic ones we can measure the tagger."""
    agree = total = 0
    for video in json.loads(corpus.read_text())["videos"]:
        for c in video["captions"]:
            verbs = {i for i, p in enumerate(c["pos"]) if p == "VERB"}
            found = {w for v in decompose(c["words"]).verbs for w in range(v.start, v.start + 1)}
            agree += len(verbs & found)
            total += len(verbs)
    assert agree / total > 0.95


def test_compositional_split_holds_unseen_combinations(corpus: Path) -> None:
    manifest = json.loads(corpus.read_text())
    held = {tuple(t) for t in manifest["held_out"]}
    assert held == held_out_triples(3)
    splits = {v["split"] for v in manifest["videos"]}
    assert splits == {"train", "val", "test", "compositional"}
    for video in manifest["videos"]:
        triples = {
            (
                video["things"][e["thing"]]["colour"],
                video["things"][e["thing"]]["shape"],
                e["action"],
            )
            for e in video["events"]
        }
        assert bool(triples & held) == (video["split"] == "compositional"), video["id"]


def test_mirrored_distractor_differs_only_in_the_action(corpus: Path) -> None:
    mirrored = [v["mirrored"] for v in json.loads(corpus.read_text())["videos"] if "mirrored" in v]
    assert mirrored
    for true, false in mirrored:
        diff = [(a, b) for a, b in zip(true["words"], false["words"], strict=False) if a != b]
        assert 1 <= len(diff) <= 2, (true["text"], false["text"])


def test_videos_are_real_h264_with_motion(corpus: Path) -> None:
    dataset = load_generic(corpus)
    item = dataset.videos[0]
    decoded = decode_video(item.path, num_frames=8, size=64)
    assert decoded.codec == "h264" and len(decoded.frames) == 8
    assert decoded.duration_s == pytest.approx(2.0)
