"""Windows of long videos as a short-clip corpus: spans as the indexer plans them, frames that
are the long video's own, captions of the events inside, splits kept, a loadable manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from corpus.datasets import load_generic
from corpus.long import generate_long_corpus
from corpus.synth import generate_corpus
from corpus.windows import MIN_COVER, _shows, generate_windows, plan_windows
from indexer.segment_plan import SegmentCfg, plan_segments


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    """Four videos of 0.3 to 0.6 minute, seed 19: train, test and compositional ones."""
    out = tmp_path_factory.mktemp("long")
    generate_long_corpus(out, 4, 19, workers=2, progress=False, min_minutes=0.3, max_minutes=0.6)
    return out


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("short")
    generate_corpus(out, 12, 0, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def windows(long_corpus: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("windows")
    generate_windows(long_corpus, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def mixed(long_corpus: Path, short_corpus: Path, windows: Path) -> Path:
    """The windows, cut again into a folder of their own, mixed with the short corpus."""
    generate_windows(long_corpus, windows / "mixed", workers=2, progress=False, mix=short_corpus)
    return windows / "mixed"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def _share(event: dict, a: float, b: float) -> float:
    """The share of the event's span inside [a, b) (negative when apart)."""
    inside = min(event["end_s"], b) - max(event["start_s"], a)
    return inside / (event["end_s"] - event["start_s"])


def _windows_of(manifest: dict) -> list[dict]:
    return [v for v in manifest["videos"] if "source" in v]


def test_the_long_corpus_has_the_splits_the_tests_need(long_corpus: Path):
    splits = {v["split"] for v in _manifest(long_corpus)["videos"]}
    assert {"train", "compositional"} <= splits and len(splits) >= 3


def test_spans_are_the_indexers_segments_that_hold_an_event(long_corpus: Path, windows: Path):
    """Every window is a segment of ``plan_segments`` at the true cuts, 2 to 12 s, and every
    segment where an event counts is a window."""
    long, cut = _manifest(long_corpus), _windows_of(_manifest(windows))
    cfg, fps = SegmentCfg(), long["fps"]
    for video in long["videos"]:
        cuts = [s["start_s"] for s in video["shots"][1:]]
        spans = plan_segments(cuts, video["duration_s"], cfg)
        own = [w for w in cut if w["source"]["video"] == video["id"]]
        mine = [(w["source"]["start_s"], w["source"]["end_s"]) for w in own]
        held = [
            (a, b) for a, b in spans if any(_share(e, a, b) >= MIN_COVER for e in video["events"])
        ]
        assert mine == held and held
        for a, b in mine:
            assert cfg.min_s - 1e-6 <= b - a <= cfg.max_s + 1e-6
            assert abs(a * fps - round(a * fps)) < 1e-6  # on frame boundaries
        assert len(set(mine)) == len(mine)


def test_captions_are_those_of_the_events_mostly_inside(long_corpus: Path, windows: Path):
    long = {v["id"]: v for v in _manifest(long_corpus)["videos"]}
    counted: dict[tuple[str, int], int] = {}
    for w in _windows_of(_manifest(windows)):
        video = long[w["source"]["video"]]
        a, b = w["source"]["start_s"], w["source"]["end_s"]
        expected, partial = [], []
        for k, e in enumerate(video["events"]):
            share = _share(e, a, b)
            if share >= MIN_COVER:
                expected.append(k)
                counted[video["id"], k] = counted.get((video["id"], k), 0) + 1
            elif share > 0:
                partial.append(k)
        assert [e["source_event"] for e in w["events"]] == expected
        assert w["partial"] == partial
        texts = [c["text"] for k in expected for c in video["events"][k]["captions"]]
        assert [c["text"] for c in w["captions"]] == texts
        assert len(texts) >= 1
        for n, e in enumerate(w["events"]):  # spans relative to the window, clipped to it
            src = video["events"][e["source_event"]]
            assert 0 <= e["start_s"] < e["end_s"] <= w["duration_s"] + 1e-9
            assert e["start_s"] == pytest.approx(max(src["start_s"], a) - a)
            assert e["covered"] >= MIN_COVER
            own = [c["text"] for c in w["captions"] if c["event"] == n]
            assert own == [x["text"] for x in src["captions"]]
    # the spans tile each video, so every event counts somewhere; overlapping windows may
    # count one twice, never more
    every = {(vid, k) for vid, v in long.items() for k in range(len(v["events"]))}
    assert set(counted) == every
    assert max(counted.values()) <= 2


def test_splits_are_the_videos_and_train_has_no_held_out_video(long_corpus, windows):
    long = {v["id"]: v["split"] for v in _manifest(long_corpus)["videos"]}
    cut = _windows_of(_manifest(windows))
    for w in cut:
        assert w["split"] == long[w["source"]["video"]]
    by_split: dict[str, set[str]] = {}
    for w in cut:
        by_split.setdefault(w["split"], set()).add(w["source"]["video"])
    held = {vid for vid, split in long.items() if split != "train"}
    assert held and not by_split.get("train", set()) & held
    assert by_split.get("compositional")  # held-out videos are cut too, in their own split


def test_frames_are_the_long_videos_own(long_corpus: Path, windows: Path):
    """Each clip has exactly its span's frames, and they match the long video's frames there
    better than the frames one step earlier or later."""
    long = {v["id"]: v for v in _manifest(long_corpus)["videos"]}
    decoded = {vid: _decode(long_corpus / v["path"]).astype(np.int16) for vid, v in long.items()}
    fps = _manifest(long_corpus)["fps"]
    for w in _windows_of(_manifest(windows)):
        clip = _decode(windows / w["path"]).astype(np.int16)
        start = round(w["source"]["start_s"] * fps)
        assert len(clip) == w["frames"] == round(w["duration_s"] * fps)
        whole = decoded[w["source"]["video"]]
        same = np.abs(clip - whole[start : start + len(clip)]).mean()
        assert same < 2.0  # re-encoded at CRF 18: close, not equal
        for shift in (-1, 1):
            if start + shift >= 0 and start + shift + len(clip) <= len(whole):
                other = whole[start + shift : start + shift + len(clip)]
                assert same < np.abs(clip - other).mean()
        with av.open(str(windows / w["path"])) as container:
            stream = container.streams.video[0]
            assert float(stream.duration * stream.time_base) == pytest.approx(w["duration_s"])


def test_the_manifest_loads_as_a_dataset_with_the_short_clips(mixed, short_corpus):
    data = load_generic(mixed)
    short = _manifest(short_corpus)["videos"]
    cut = _windows_of(_manifest(mixed))
    assert len(data.videos) == len(cut) + len(short)
    for item in data.videos:
        assert item.path.exists() and item.captions
        assert item.captions[0].pos is not None  # parts of speech kept for the concept targets
    for item in data.videos:  # a window names its long video and each caption's event there
        if item.id.startswith("long"):
            events = item.extra["caption_events"]
            assert len(events) == len(item.captions)
            assert all(e.startswith(item.extra["source"]["video"] + "#") for e in events)
        else:
            assert "source" not in item.extra and "caption_events" not in item.extra
    mixed = {v.id: v for v in data.videos if not v.id.startswith("long")}
    assert {v["id"]: v["split"] for v in short} == {k: v.split for k, v in mixed.items()}
    assert len(data.split("train")) >= len([w for w in cut if w["split"] == "train"])


def test_windows_showing_the_mixed_corpus_held_out_triples_are_left_out(
    long_corpus: Path, short_corpus: Path, mixed: Path
):
    """Mixed with a short corpus, no window shows a (colour, shape, action) triple that corpus
    holds out for its compositional split (else training would see them); the others stay."""
    held = {tuple(t) for t in _manifest(short_corpus)["held_out"]}
    source = _manifest(long_corpus)
    planned = {w.id: (v, w) for v in source["videos"] for w in plan_windows(v, source["fps"])}
    showing = {name for name, (v, w) in planned.items() if _shows(v, w, held)}
    assert showing and len(showing) < len(planned)  # the two corpora overlap, in part
    assert {w["id"] for w in _windows_of(_manifest(mixed))} == set(planned) - showing
    for name in showing:  # what _shows found: a counted event's thing doing a held triple
        video, window = planned[name]
        seen = set()
        for k in window.events:
            event = video["events"][k]
            things = video["shots"][event["shot"]]["things"]
            for a in event["actions"]:
                seen.add((things[a["thing"]]["colour"], things[a["thing"]]["shape"], a["action"]))
            seen |= {(things[t]["colour"], things[t]["shape"], "still") for t in event["still"]}
        assert seen & held


def test_same_corpus_same_bytes_and_files_kept(long_corpus: Path, windows: Path, tmp_path: Path):
    again = generate_windows(long_corpus, tmp_path, workers=1, progress=False)
    first = _manifest(windows)
    second = json.loads(again.read_text())
    assert _windows_of(first) == second["videos"]
    for w in second["videos"][:3]:
        digest = [
            hashlib.sha256((d / w["path"]).read_bytes()).hexdigest() for d in (windows, tmp_path)
        ]
        assert digest[0] == digest[1]
    # a file already there is kept, not re-cut
    path = tmp_path / second["videos"][0]["path"]
    path.write_bytes(b"kept")
    generate_windows(long_corpus, tmp_path, workers=1, progress=False)
    assert path.read_bytes() == b"kept"


def test_min_cover_decides_which_events_count(long_corpus: Path):
    manifest = _manifest(long_corpus)
    videos, fps = manifest["videos"], manifest["fps"]
    strict = [w for v in videos for w in plan_windows(v, fps, min_cover=1.0)]
    loose = [w for v in videos for w in plan_windows(v, fps, min_cover=0.01)]
    default = [w for v in videos for w in plan_windows(v, fps)]
    counts = [sum(len(w.events) for w in ws) for ws in (strict, default, loose)]
    assert counts[0] < counts[1] < counts[2]
    assert not any(w.partial for w in loose)  # any overlap counts
    with pytest.raises(ValueError):
        plan_windows(videos[0], fps, min_cover=0)


def test_half_an_event_counts_and_less_is_partial():
    """A 20 s shot without cuts: windows [0, 6), [3, 9), [6, 12), [9, 15), [12, 20). The event
    at [5, 7) s is half inside [0, 6) and [6, 12) (counts) and wholly inside [3, 9); the one
    at [14.5, 16.5) is a quarter inside [9, 15) (partial there)."""
    caption = {"text": "x", "words": ["x"], "pos": ["NOUN"], "lemmas": ["x"]}
    events = [
        {"start_s": 5.0, "end_s": 7.0, "actions": [], "captions": [caption]},
        {"start_s": 14.5, "end_s": 16.5, "actions": [], "captions": [caption]},
    ]
    video = {
        "id": "v",
        "split": "train",
        "duration_s": 20.0,
        "frames": 160,
        "shots": [{"start_s": 0.0, "end_s": 20.0}],
        "events": events,
    }
    got = [(w.start / 8, w.end / 8, w.events, w.partial) for w in plan_windows(video, 8)]
    assert got == [  # [9, 15) holds a quarter of an event only: no window
        (0.0, 6.0, (0,), ()),
        (3.0, 9.0, (0,), ()),
        (6.0, 12.0, (0,), ()),
        (12.0, 20.0, (1,), ()),
    ]
    got = [(w.start / 8, w.events, w.partial) for w in plan_windows(video, 8, min_cover=0.2)]
    assert (9.0, (1,), ()) in got  # a quarter is enough at min_cover 0.2
    strict = [(w.start / 8, w.events, w.partial) for w in plan_windows(video, 8, min_cover=0.6)]
    assert strict == [(3.0, (0,), ()), (12.0, (1,), ())]
