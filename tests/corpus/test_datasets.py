"""Dataset loaders on small fixture files in each supported format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.datasets import DatasetError, decode_split, load_dataset


def test_msrvtt(tmp_path: Path) -> None:
    ann = tmp_path / "msrvtt.json"
    ann.write_text(
        json.dumps(
            {
                "videos": [
                    {"video_id": "video0", "split": "train"},
                    {"video_id": "video1", "split": "validate"},
                ],
                "sentences": [
                    {"video_id": "video0", "caption": "a man sings ", "sen_id": 0},
                    {"video_id": "video0", "caption": "someone sings", "sen_id": 1},
                    {"video_id": "video1", "caption": "a dog runs", "sen_id": 2},
                ],
            }
        )
    )
    data = load_dataset(f"msrvtt:{ann}", video_dir=str(tmp_path / "v"))
    assert [v.id for v in data.split("train")] == ["video0"]
    assert [c.text for c in data.videos[0].captions] == ["a man sings", "someone sings"]
    assert data.split("val")[0].path == tmp_path / "v" / "video1.mp4"


def test_vatex(tmp_path: Path) -> None:
    files = {}
    for split in ("train", "test"):
        files[split] = tmp_path / f"{split}.json"
        files[split].write_text(
            json.dumps(
                [
                    {
                        "videoID": f"abc_{split}_000001_000011",
                        "enCap": ["A cat jumps.", "cat leaps"],
                        "chCap": ["猫跳"],
                    }
                ]
            )
        )
    spec = f"vatex:train={files['train']},test={files['test']}"
    data = load_dataset(spec, video_dir="/videos")
    assert len(data.videos) == 2
    assert data.split("test")[0].captions[0].text == "A cat jumps."


def test_generic_and_split_errors(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "format": "hanet-dataset",
                "name": "mini",
                "videos": [
                    {
                        "id": "a",
                        "path": "a.mp4",
                        "split": "test",
                        "captions": [{"text": "x", "pos": ["NOUN"], "words": ["x"]}],
                    }
                ],
            }
        )
    )
    data = load_dataset(str(tmp_path))
    assert data.name == "mini" and data.videos[0].captions[0].pos == ("NOUN",)
    with pytest.raises(DatasetError, match="no videos in split 'train'"):
        data.split("train")


def test_bad_annotation_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(f"msrvtt:{bad}", video_dir=".")
    bad.write_text(json.dumps({"videos": []}))
    with pytest.raises(DatasetError, match="not MSR-VTT"):
        load_dataset(f"msrvtt:{bad}", video_dir=".")
    with pytest.raises(DatasetError, match="needs --video-dir"):
        load_dataset(f"msrvtt:{bad}")
    with pytest.raises(DatasetError, match="not a hanet-dataset"):
        load_dataset(str(bad))


def test_decode_split_records_failures_and_caches(tmp_path: Path) -> None:
    from corpus.synth import generate_corpus

    manifest = generate_corpus(tmp_path / "c", 6, seed=1, workers=1, progress=False)
    items = list(load_dataset(str(manifest)).videos)
    broken = tmp_path / "c" / "videos" / f"{items[0].id}.mp4"
    broken.write_bytes(b"garbage")
    out = decode_split(items, num_frames=4, size=32)
    assert list(out.failed) == [items[0].id] and "not a readable" in out.failed[items[0].id]
    assert out.frames.shape == (5, 4, 32, 32, 3) and out.mask.all()
    cache = tmp_path / "cache.npz"
    first = decode_split(items[1:], num_frames=4, size=32, cache=cache)
    assert cache.exists()
    again = decode_split(items[1:], num_frames=4, size=32, cache=cache)
    assert (first.frames == again.frames).all() and again.ids == first.ids
