"""Text-video datasets: the project's generic manifest, MSR-VTT's and VATEX's annotation JSON.

Every loader gives the same ``Dataset`` (videos with their split and captions); frames are read
through ``indexer.decode``, the decoding code the indexer itself uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.decode import DecodeError, decode_video


class DatasetError(Exception):
    """An annotation file that cannot be read as the format it claims to be."""


@dataclass(frozen=True)
class Caption:
    text: str
    pos: tuple[str, ...] | None = None  # known parts of speech (synthetic corpus), else None
    lemmas: tuple[str, ...] | None = None
    words: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VideoItem:
    id: str
    path: Path
    split: str
    captions: tuple[Caption, ...]
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Dataset:
    name: str
    videos: tuple[VideoItem, ...]

    def split(self, name: str) -> list[VideoItem]:
        items = [v for v in self.videos if v.split == name]
        if not items:
            known = sorted({v.split for v in self.videos})
            raise DatasetError(f"no videos in split {name!r} of {self.name}; splits: {known}")
        return items


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def load_generic(manifest_path: str | Path) -> Dataset:
    """The project's format: ``{"format": "hanet-dataset", "videos": [{"id", "path" (relative
    to the manifest), "split", "captions": [{"text", optional "words", "pos", "lemmas"}]}]}``."""
    path = Path(manifest_path)
    if path.is_dir():
        path = path / "manifest.json"
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != "hanet-dataset":
        raise DatasetError(f"{path} is not a hanet-dataset manifest")
    videos = []
    for v in data["videos"]:
        captions = tuple(
            Caption(
                c["text"],
                tuple(c["pos"]) if "pos" in c else None,
                tuple(c["lemmas"]) if "lemmas" in c else None,
                tuple(c["words"]) if "words" in c else None,
            )
            for c in v["captions"]
        )
        extra = {k: v[k] for k in ("mirrored", "swapped", "events", "source") if k in v}
        if "source" in v:  # a window of a long video (corpus.windows): its captions' events
            extra["caption_events"] = [
                f"{v['source']['video']}#{v['events'][c['event']]['source_event']}"
                for c in v["captions"]
            ]
        videos.append(VideoItem(v["id"], path.parent / v["path"], v["split"], captions, extra))
    return Dataset(data.get("name", path.parent.name), tuple(videos))


def load_msrvtt(annotation: str | Path, video_dir: str | Path) -> Dataset:
    """MSR-VTT's ``train_val_videodatainfo.json`` / ``test_videodatainfo.json`` layout:
    ``{"videos": [{"video_id", "split"}], "sentences": [{"video_id", "caption"}]}``;
    files are ``{video_dir}/{video_id}.mp4``."""
    data = _read_json(Path(annotation))
    try:
        captions: dict[str, list[Caption]] = {}
        for s in data["sentences"]:
            captions.setdefault(s["video_id"], []).append(Caption(s["caption"].strip()))
        videos = tuple(
            VideoItem(
                v["video_id"],
                Path(video_dir) / f"{v['video_id']}.mp4",
                {"validate": "val"}.get(v["split"], v["split"]),
                tuple(captions.get(v["video_id"], ())),
            )
            for v in data["videos"]
        )
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{annotation} is not MSR-VTT annotation JSON: missing {exc}") from exc
    return Dataset("msrvtt", videos)


def load_vatex(annotations: dict[str, str | Path], video_dir: str | Path) -> Dataset:
    """VATEX's JSON files, one per split (``{"train": "vatex_training_v1.0.json", ...}``), each a
    list of ``{"videoID", "enCap": [...]}``; files are ``{video_dir}/{videoID}.mp4``."""
    videos = []
    for split, annotation in annotations.items():
        data = _read_json(Path(annotation))
        try:
            for v in data:
                caps = tuple(Caption(c.strip()) for c in v["enCap"])
                videos.append(
                    VideoItem(v["videoID"], Path(video_dir) / f"{v['videoID']}.mp4", split, caps)
                )
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{annotation} is not VATEX JSON: missing {exc}") from exc
    return Dataset("vatex", tuple(videos))


def load_dataset(spec: str, video_dir: str | None = None) -> Dataset:
    """From a command-line spec: a manifest or its folder (generic), ``msrvtt:ANNOTATION``, or
    ``vatex:train=FILE,val=FILE,test=FILE``; ``video_dir`` for the last two."""
    kind, _, rest = spec.partition(":")
    if kind in {"msrvtt", "vatex"} and not video_dir:
        raise DatasetError(f"{kind} needs --video-dir")
    if kind == "msrvtt":
        return load_msrvtt(rest, video_dir)
    if kind == "vatex":
        files = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
        return load_vatex(files, video_dir)
    return load_generic(spec)


@dataclass
class FrameCache:
    """Decoded frames of a split: frames (N, T, S, S, 3) uint8, mask (N, T) bool, times (N, T)
    seconds of each frame, and the videos that failed to decode with their reasons (kept out
    of the arrays). ``following``: each frame's motion partner as the served path reads it
    (``decode_split(served=True)``), else None (the next sampled frame)."""

    ids: list[str]
    frames: np.ndarray
    mask: np.ndarray
    times: np.ndarray
    failed: dict[str, str]
    following: np.ndarray | None = None


def decode_split(
    items: list[VideoItem],
    num_frames: int,
    size: int,
    cache: Path | None = None,
    progress: bool = True,
    served: bool = False,
) -> FrameCache:
    """Decode every video of ``items`` once (reused from ``cache`` when it holds the same ids,
    frame count and size). ``served``: as the indexer reads a unit (``_decode_served``), with
    each frame's motion partner; a video longer than one unit fails with the reason."""
    ids = [v.id for v in items]
    if cache is not None and cache.exists():
        data = np.load(cache, allow_pickle=False)
        fresh = "times" in data.files and data["frames"].shape[1:3] == (num_frames, size)
        if fresh and list(data["ids"]) == ids and served == ("following" in data.files):
            following = data["following"] if served else None
            return FrameCache(ids, data["frames"], data["mask"], data["times"], {}, following)
    frames = np.zeros((len(items), num_frames, size, size, 3), dtype=np.uint8)
    following = np.zeros_like(frames) if served else None
    mask = np.zeros((len(items), num_frames), dtype=bool)
    times = np.zeros((len(items), num_frames), dtype=np.float64)
    failed: dict[str, str] = {}
    for i, item in enumerate(tqdm(items, desc="decode", unit="video", disable=not progress)):
        try:
            if served:
                got, partners, at = _decode_served(item.path, num_frames, size)
                following[i, : len(got)] = partners
            else:
                decoded = decode_video(item.path, num_frames, size)
                got, at = decoded.frames, decoded.timestamps_s
        except DecodeError as exc:
            failed[item.id] = str(exc)
            continue
        frames[i, : len(got)], mask[i, : len(got)], times[i, : len(got)] = got, True, at
    keep = [i for i, v in enumerate(items) if v.id not in failed]
    out = FrameCache(
        [ids[i] for i in keep],
        frames[keep],
        mask[keep],
        times[keep],
        failed,
        None if following is None else following[keep],
    )
    if cache is not None and not failed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp.npz")
        extra = {} if out.following is None else {"following": out.following}
        arrays = {"frames": out.frames, "mask": out.mask, "times": out.times, **extra}
        np.savez(tmp, ids=np.array(out.ids), **arrays)
        tmp.replace(cache)
    return out


def _decode_served(path: Path, num_frames: int, size: int):
    """Frames, motion partners and times of a video as the indexer embeds it when it is one
    unit (``indexer.segments.decode_segments``, ``indexer.embedder.motion_partners``): the
    training input that matches what search serves, e.g. for windows of long videos."""
    from indexer.embedder import motion_partners
    from indexer.segments import decode_segments

    segments = decode_segments(path, num_frames, size).segments
    if len(segments) != 1:
        raise DecodeError(f"not one served unit: the indexer cuts it into {len(segments)}")
    (segment,) = segments
    return segment.frames, motion_partners(segment), segment.timestamps_s
