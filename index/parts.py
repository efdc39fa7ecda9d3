"""A rerank part's files, and the unit ids and spans of the rows a writer publishes (or,
compacting, writes again)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from index import rows
from index.reader import FIELDS, GRAM_CHUNK, GRAM_FILES, Build, BuildError
from index.rows import DEFAULT_ROW_FORMAT
from index.vectors import unit_id, video_of
from model import VideoEmbeddings
from model.scores import gram


def write_part(
    folder: Path,
    units: np.ndarray,
    video: VideoEmbeddings,
    frame_times: np.ndarray,
    spans: np.ndarray,
    fmt: str = DEFAULT_ROW_FORMAT,
) -> None:
    """One part of rerank rows in ``folder``: each field in the row format ``fmt``
    (``index.rows``: float16, or int8 vectors with per-vector scales), the Gram matrices of the
    rows as stored (decoded), frame times, spans and unit ids."""
    stored = {}
    for name in FIELDS:
        stored.update(rows.encode(name, getattr(video, name).detach().cpu().numpy(), fmt))
    write_stored(folder, stored, frame_times, spans, units)


def write_stored(
    folder: Path,
    stored: dict[str, np.ndarray],
    frame_times: np.ndarray,
    spans: np.ndarray,
    units: np.ndarray,
) -> None:
    """A part from rows already in a row format (``rows.encode``'s files, or a build's own:
    compaction moves them without coding them again), with their Gram matrices, written
    ``GRAM_CHUNK`` units at a time."""
    writer = PartWriter(folder, len(units), stored)
    for lo in range(0, len(units), GRAM_CHUNK):
        writer.put(lo, {name: array[lo : lo + GRAM_CHUNK] for name, array in stored.items()})
    writer.close(frame_times, spans, units)


class PartWriter:
    """A new part's rows written into memory-mapped files a chunk at a time (bounded memory),
    two records per unit: its global vector and concept probabilities (``rows.SUMMARY``:
    what the candidate stage reads of many units), and the rest of its fields with the Gram
    matrices of its vectors as stored (``rows.RECORDS``): a cold search reads a unit's row in
    two reads."""

    def __init__(self, folder: Path, count: int, like: dict[str, np.ndarray]) -> None:
        """``like``: rows in the part's row format, by file name (any number of them), for
        each file's dtype and shape."""
        shapes = {name: (array.dtype, array.shape[1:]) for name, array in like.items()}
        for name, file in GRAM_FILES.items():
            frames = like[name].shape[1]
            shapes[file] = (np.dtype(np.float32), (frames, frames))
        self.files, self.out = [], {}
        for file, chosen in (
            (rows.RECORDS, [n for n in shapes if n not in rows.SUMMARY_FIELDS]),
            (rows.SUMMARY, [n for n in shapes if n in rows.SUMMARY_FIELDS]),
        ):
            packed = [(name, *shapes[name]) for name in chosen]
            packed.sort(key=lambda field: -field[1].alignment)  # no padding between fields
            records = _new_array(folder, file, np.dtype(packed, align=True), (count,))
            self.files.append(records)
            self.out.update({name: records[name] for name in records.dtype.names})
        self.folder = folder

    def put(self, lo: int, stored: dict[str, np.ndarray]) -> None:
        """Rows ``lo``, ``lo + 1``, ... in the row format (by file name), and their Gram
        matrices."""
        hi = lo + len(stored[FIELDS[0]])
        for name, array in stored.items():
            self.out[name][lo:hi] = array
        for name, file in GRAM_FILES.items():
            vectors = rows.decode(name, stored[name], stored.get(name + rows.SCALE))
            self.out[file][lo:hi] = gram(vectors, torch.float32).numpy()

    def flush(self) -> None:
        """The rows written out to their files (nothing more can be put)."""
        for array in self.files:
            if isinstance(array, np.memmap):
                array.flush()
        self.out.clear()
        self.files.clear()

    def close(self, frame_times: np.ndarray, spans: np.ndarray, units: np.ndarray) -> None:
        """The rows flushed to their files, and the part's other files written."""
        self.flush()
        np.save(self.folder / "frame_times.npy", frame_times.astype(np.float32))
        np.save(self.folder / "spans.npy", np.asarray(spans, np.float32).reshape(-1, 2))
        np.save(self.folder / "unit_ids.npy", np.asarray(units, dtype=np.int64))


def _new_array(folder: Path, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A new ``<name>.npy`` in ``folder`` memory-mapped for writing (an empty one written
    whole: an empty file cannot be mapped)."""
    path = folder / f"{name}.npy"
    if not np.prod(shape):
        np.save(path, np.zeros(shape, dtype))
        return np.zeros(shape, dtype)
    return np.lib.format.open_memmap(path, "w+", dtype, shape)


def link_parts(src: Path, dst: Path, parts: list[str]) -> None:
    """An earlier version's parts (``src``: its folder) in the folder of a new one, ``dst``:
    their files hard-linked, not copied."""
    for part in parts:
        (dst / "parts" / part).mkdir(parents=True)
        for f in (src / "parts" / part).iterdir():
            os.link(f, dst / "parts" / part / f.name)


def add_part(
    root: Path,
    name: str,
    units: np.ndarray,
    video: VideoEmbeddings,
    frame_times: np.ndarray,
    spans: np.ndarray,
    fmt: str,
    stored: dict[str, np.ndarray] | None = None,
) -> None:
    """A new part ``name`` in the folder of a version being written, ``root``: these units'
    rows coded in row format ``fmt`` from ``video`` (``write_part``), or ``stored``, rows
    already in a row format, as they are (``write_stored``)."""
    folder = root / "parts" / name
    folder.mkdir(parents=True)
    if stored is not None:
        write_stored(folder, stored, frame_times, spans, units)
    else:
        write_part(folder, units, video, frame_times, spans, fmt)


def stored_videos(root: Path, parts: list[str]) -> np.ndarray:
    """Every video with rows (and vectors) in a version, deleted or not (may repeat)."""
    ids = [video_of(np.load(root / "parts" / part / "unit_ids.npy")) for part in parts]
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def no_rows() -> VideoEmbeddings:
    """Embeddings of no unit (a publish without new rows, or of rows already coded)."""
    return VideoEmbeddings(**{f: torch.zeros(0) for f in FIELDS})


def live_rows(
    build: Build,
) -> tuple[np.ndarray, VideoEmbeddings, np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    """A build's live units (ascending) and their rows, to be written again as one part
    (compaction): unit ids, embeddings, frame times, spans, and the rows as stored when every
    part holding them is in the build's row format (moved as they are, not coded again; the
    embeddings are then empty) or None (coded again from the embeddings)."""
    live = sorted(build.rows)
    fmt = build.manifest.get("rows", "float16")  # builds from before row formats: float16
    stored = build.stored(live, fmt) if live else None
    video = build.embeddings(live) if live and stored is None else no_rows()
    frames = [build.frame_times(u) for u in live]
    times = np.stack(frames) if frames else np.zeros((0, 1), np.float32)
    spans = np.array([build.span(u) for u in live], np.float32).reshape(-1, 2)
    return np.array(live, np.int64), video, times, spans, stored


def unit_rows(
    video_ids: list[int],
    video: VideoEmbeddings,
    frame_times: np.ndarray,
    spans: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The unit ids of rows whose videos are ``video_ids`` (a video's consecutive rows are its
    segments 0, 1, ...; a video may not come back after another one), and the units' spans:
    as given, or, for videos indexed whole, ``_whole``."""
    units, seen, previous = [], set(), None
    for video_id in video_ids:
        if video_id != previous:
            if video_id in seen:
                raise BuildError(f"video {video_id}'s units are not consecutive rows")
            seen.add(video_id)
            segment, previous = 0, video_id
        units.append(unit_id(video_id, segment))
        segment += 1
    if spans is None:
        valid = video.frame_mask.sum(1).tolist()
        spans = [_whole(times, n) for times, n in zip(frame_times, valid, strict=True)]
    return np.asarray(units, dtype=np.int64), np.asarray(spans, np.float32).reshape(-1, 2)


def _whole(times: np.ndarray, valid: int) -> tuple[float, float]:
    """A unit's span from its frame times alone: from 0 to as far past its last sampled frame
    as half the frames' spacing (what ``service.search.moment_seconds`` gives that frame)."""
    t = times[: max(1, valid)]
    return 0.0, float(t[-1] + (t[-1] - t[-2]) / 2 if len(t) > 1 else t[-1])
