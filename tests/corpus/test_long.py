"""Long procedural videos: spans against the real files, cuts where the manifest says and only
there, still and empty stretches, captions, splits and held-out triples, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from corpus.long import (
    EVENT_FRAMES,
    FORMAT,
    LongVideo,
    Segment,
    generate_long_corpus,
    iter_moments,
    plan_long_corpus,
    render_segments,
)
from corpus.moments import moment_report
from corpus.scene import SHAPES, Step, render
from corpus.synth import FPS, held_out_triples, plan_corpus

# Share of pixels changing by more than 20 levels between two frames: a cut changes most of the
# picture (the backgrounds are chosen to differ), motion inside a shot one thing's area.
CUT_SHARE = 0.35


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three videos of 0.5 to 1 minute, seed 0 (one of them compositional)."""
    out = tmp_path_factory.mktemp("long")
    return generate_long_corpus(
        out, 3, 0, workers=2, progress=False, min_minutes=0.5, max_minutes=1
    )


@pytest.fixture(scope="module")
def manifest(corpus: Path) -> dict:
    return json.loads(corpus.read_text())


@pytest.fixture(scope="module")
def decoded(corpus: Path, manifest: dict) -> dict[str, tuple[np.ndarray, float]]:
    """Per video, every frame (RGB) and the stream's declared duration."""
    out = {}
    for video in manifest["videos"]:
        with av.open(str(corpus.parent / video["path"])) as container:
            stream = container.streams.video[0]
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
            out[video["id"]] = (frames, float(stream.duration * stream.time_base))
    return out


def _changed(frames: np.ndarray) -> np.ndarray:
    """(T - 1,) share of pixels that change by more than 20 levels from one frame to the next."""
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=-1)
    return (diff > 20).mean(axis=(1, 2))


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _render_every_frame(video: LongVideo, segment: Segment) -> np.ndarray:
    """A segment rendered frame by frame (the writer draws a stretch once and repeats it)."""
    shot = video.shots[segment.shot]
    t0 = segment.start - shot.start
    steps = [Step(s.thing, s.action, s.start - t0, s.end - t0) for s in shot.steps]
    n = segment.end - segment.start
    return render(list(shot.things), steps, shot.background, n, _rng())


def _segments(video: dict) -> list[dict]:
    return sorted(video["events"] + video["idle"], key=lambda s: s["start_s"])


def test_manifest_format_and_variety(manifest: dict) -> None:
    assert manifest["format"] == FORMAT and manifest["version"] == 1 and manifest["fps"] == FPS
    assert {tuple(t) for t in manifest["held_out"]} == held_out_triples(0)
    videos = manifest["videos"]
    assert [v["id"] for v in videos] == ["long00000", "long00001", "long00002"]
    assert all(30.0 <= v["duration_s"] <= 60.0 for v in videos)
    kinds = {s["kind"] for v in videos for s in v["idle"]}
    assert kinds == {"still", "empty"}
    in_shot = []  # events right after another event of the same shot
    for video in videos:
        segments = _segments(video)
        for a, b in zip(segments, segments[1:], strict=False):
            if "captions" in a and "captions" in b and a["shot"] == b["shot"]:
                in_shot.append(b)
    assert in_shot and not any(e["cut_before"] for e in in_shot)
    assert sum(e["cut_before"] for v in videos for e in v["events"]) >= 3


def test_spans_match_the_files(manifest: dict, decoded: dict) -> None:
    for video in manifest["videos"]:
        frames, declared_s = decoded[video["id"]]
        assert len(frames) == video["frames"] and frames.shape[1:] == (96, 96, 3)
        assert video["duration_s"] == len(frames) / FPS == pytest.approx(declared_s)
        for spans in (_segments(video), video["shots"]):
            assert spans[0]["start_s"] == 0 and spans[-1]["end_s"] == video["duration_s"]
            for a, b in zip(spans, spans[1:], strict=False):
                assert a["end_s"] == b["start_s"] and a["start_s"] < a["end_s"]
        for event in video["events"]:
            assert (event["end_s"] - event["start_s"]) * FPS in EVENT_FRAMES
            shot = video["shots"][event["shot"]]
            assert shot["start_s"] <= event["start_s"] < event["end_s"] <= shot["end_s"]
            acts = event["actions"]
            assert acts[0]["start_s"] == event["start_s"] and acts[-1]["end_s"] == event["end_s"]


def test_cuts_are_where_the_manifest_says_and_only_there(manifest: dict, decoded: dict) -> None:
    for video in manifest["videos"]:
        changed = _changed(decoded[video["id"]][0])
        cuts = {round(s["start_s"] * FPS) for s in video["shots"][1:]}
        assert {int(t) + 1 for t in np.flatnonzero(changed > CUT_SHARE)} == cuts, video["id"]
        for segment in _segments(video):
            first_of_shot = segment["start_s"] == video["shots"][segment["shot"]]["start_s"]
            assert segment["cut_before"] == (first_of_shot and segment["start_s"] > 0)
        shots = video["shots"]
        for a, b in zip(shots, shots[1:], strict=False):
            assert a["background"] != b["background"]


def test_nothing_moves_in_stretches_and_empty_ones_are_bare(manifest: dict, decoded: dict) -> None:
    for video in manifest["videos"]:
        frames = decoded[video["id"]][0]
        changed = _changed(frames)
        for stretch in video["idle"]:
            assert "captions" not in stretch
            a, b = round(stretch["start_s"] * FPS), round(stretch["end_s"] * FPS)
            assert changed[a : b - 1].max(initial=0.0) == 0.0
            if stretch["kind"] == "empty":
                assert video["shots"][stretch["shot"]]["things"] == []
        for event in video["events"]:
            a, b = round(event["start_s"] * FPS), round(event["end_s"] * FPS)
            assert changed[a : b - 1].max() > 0.0  # something happens in every event


def test_rendering_a_stretch_frame_by_frame_changes_nothing() -> None:
    """The writer repeats a stretch's first frame: every frame rendered must equal it."""
    stretches = 0
    for video in plan_long_corpus(6, 2, 0.3, 0.6):
        for segment in video.segments:
            if segment.kind != "event":
                frames = _render_every_frame(video, segment)
                assert (frames == frames[0]).all(), (video.id, segment)
                stretches += 1
    assert stretches >= 10


def test_things_continue_from_where_they_were() -> None:
    """Inside a shot, a segment's first frame is the previous segment's last frame, except
    where an action starts or ends with a jump of its own (grow and shrink start resized, a
    blink ends hidden)."""
    checked = 0
    for video in plan_long_corpus(8, 5, 0.3, 0.6):
        frames = np.concatenate(list(render_segments(video)))
        for before, segment in zip(video.segments, video.segments[1:], strict=False):
            blinks = before.kind == "event" and before.steps[-1].action == "blink"
            resized = segment.kind == "event" and segment.steps[0].action in ("grow", "shrink")
            if segment.shot == before.shot and not blinks and not resized:
                assert (frames[segment.start] == frames[segment.start - 1]).all()
                checked += 1
    assert checked >= 10


def test_a_thing_stands_still_before_its_first_action() -> None:
    """Until its first step a thing is drawn as if it had none. ``scene`` draws a thing before
    its first step with that step's starting opacity, which for a blink depends on the frame:
    without the leading still step, a thing would blink from the shot's first frame."""
    checked = 0
    for video in plan_long_corpus(20, 1, 0.3, 0.6):
        for shot in video.shots:
            for k in range(len(shot.things)):
                own = [s for s in shot.steps if s.thing == k and s.action != "still"]
                if own and own[0].action == "blink" and own[0].start > 0:
                    others = [s for s in shot.steps if s.thing != k]
                    with_k, without_k = (
                        render(list(shot.things), steps, shot.background, own[0].start, _rng())
                        for steps in (list(shot.steps), others)
                    )
                    assert (with_k == without_k).all(), (video.id, shot.start, k)
                    checked += 1
    assert checked >= 3


def test_captions_describe_their_event(manifest: dict) -> None:
    for video in manifest["videos"]:
        for event in video["events"]:
            things = video["shots"][event["shot"]]["things"]
            actors = [things[a["thing"]] for a in event["actions"]]
            texts = [c["text"] for c in event["captions"]]
            assert len(texts) >= 5 and len(set(texts)) == len(texts)
            for caption in event["captions"]:
                assert len(caption["words"]) == len(caption["pos"]) == len(caption["lemmas"])
                for thing in actors:
                    assert {thing["colour"], thing["shape"]} <= set(caption["words"]), caption
                pairs = zip(caption["words"], caption["pos"], strict=True)
                nouns = {w for w, p in pairs if p == "NOUN"}
                assert nouns & set(SHAPES)


def test_splits_and_held_out_triples_mean_what_synth_means() -> None:
    videos = plan_long_corpus(60, 3, 0.1, 0.3)
    assert [v.split for v in videos] == [v.split for v in plan_corpus(60, 3)]
    assert {v.split for v in videos} == {"train", "val", "test", "compositional"}
    held = held_out_triples(3)
    for video in videos:
        compositional = video.split == "compositional"
        for segment in video.segments:
            if segment.kind != "event":
                continue
            things = video.shots[segment.shot].things
            triples = [
                (things[s.thing].colour, things[s.thing].shape, s.action) for s in segment.steps
            ]
            triples += [(things[k].colour, things[k].shape, "still") for k in segment.still]
            if compositional:
                assert triples[0] in held, (video.id, segment)
            else:
                assert not set(triples) & held, (video.id, segment)
        if not compositional:
            looks = {(t.colour, t.shape, "still") for s in video.shots for t in s.things}
            assert not looks & held


def test_durations_stay_within_the_bounds_asked_for() -> None:
    videos = plan_long_corpus(20, 1, 0.2, 0.4)
    assert all(0.2 * 60 * FPS <= v.frames <= 0.4 * 60 * FPS for v in videos)
    assert len({v.frames for v in videos}) > 10
    with pytest.raises(ValueError):
        plan_long_corpus(2, 1, 0.5, 0.4)
    with pytest.raises(ValueError):
        plan_long_corpus(2, 1, 0.0, 0.4)


def test_same_seed_same_corpus_and_files_kept(corpus: Path, tmp_path: Path) -> None:
    again = generate_long_corpus(
        tmp_path, 3, 0, workers=1, progress=False, min_minutes=0.5, max_minutes=1
    )
    assert json.loads(corpus.read_text()) == json.loads(again.read_text())
    for name in ("long00000.mp4", "long00002.mp4"):
        a = hashlib.sha256((corpus.parent / "videos" / name).read_bytes()).hexdigest()
        b = hashlib.sha256((again.parent / "videos" / name).read_bytes()).hexdigest()
        assert a == b
    assert plan_long_corpus(3, 0, 0.5, 1) != plan_long_corpus(3, 1, 0.5, 1)
    kept = again.parent / "videos" / "long00001.mp4"
    kept.write_bytes(b"left alone")
    generate_long_corpus(tmp_path, 3, 0, workers=1, progress=False, min_minutes=0.5, max_minutes=1)
    assert kept.read_bytes() == b"left alone"


def test_planned_frames_are_the_written_frames(manifest: dict, decoded: dict) -> None:
    """The file holds what ``render_segments`` gives, up to H.264's small losses."""
    video = plan_long_corpus(1, 0, 0.5, 1)[0]
    planned = np.concatenate(list(render_segments(video))).astype(np.int16)
    frames = decoded[video.id][0].astype(np.int16)
    assert planned.shape == frames.shape
    assert np.abs(planned - frames).mean() < 3.0


def test_true_moments_score_perfectly(manifest: dict) -> None:
    truth = [(v, s, e) for v, s, e, _ in iter_moments(manifest)]
    assert len(truth) == sum(len(e["captions"]) for v in manifest["videos"] for e in v["events"])
    report = moment_report(truth, [[t] for t in truth], [(s, e) for _, s, e in truth])
    assert report["corpus"]["IoU>=0.7"]["R@1"] == 100.0 and report["video"]["MedR"] == 1.0
    assert report["localisation"]["mIoU"] == 100.0
    assert report["videos"] == 3


def _ceiling_module():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "moment_ceiling.py"
    spec = importlib.util.spec_from_file_location("moment_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_moment_ceiling_counts_alike_events_across_the_corpus() -> None:
    """Two test events alike (the same thing doing the same) in one video, a third alike to a
    training event of another video: every event has one alike, so a perfect model's expected
    moment R@1 is 1/2; by video, the first two are certain and the third a coin toss; given
    the video, the first two are a coin toss and the third certain."""
    things = [{"colour": "red", "shape": "star", "size": "small"}]
    shots = [{"things": things}]

    def event(action: str) -> dict:
        return {"shot": 0, "actions": [{"thing": 0, "action": action}], "captions": [{}, {}]}

    videos = [
        {"id": "a", "split": "test", "shots": shots, "events": [event("grows"), event("grows")]},
        {"id": "b", "split": "test", "shots": shots, "events": [event("spins")]},
        {"id": "c", "split": "train", "shots": shots, "events": [event("spins")]},
    ]
    got = _ceiling_module().ceilings(videos, "test", per_event=1, size=True)
    assert got["queries"] == 3
    assert got["moment_r1"] == pytest.approx(50.0)
    assert got["video_r1"] == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    assert got["given_video_r1"] == pytest.approx(100 * (0.5 + 0.5 + 1) / 3)
    assert got["with_alike_elsewhere_pct"] == pytest.approx(100.0)
