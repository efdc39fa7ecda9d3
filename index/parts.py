"""A rerank part's files, and the unit ids and spans of the rows a writer publishes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from index import rows
from index.reader import FIELDS, GRAM_CHUNK, GRAM_FILES, BuildError
from index.rows import DEFAULT_ROW_FORMAT
from index.vectors import unit_id
from model import VideoEmbeddings
from model.scores import unit_grams


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
    compaction moves them without coding them again), with their Gram matrices."""
    for name, array in stored.items():
        np.save(folder / f"{name}.npy", array)
    video = VideoEmbeddings(
        **{n: rows.decode(n, stored[n], stored.get(n + rows.SCALE)) for n in FIELDS}
    )
    # of the rows as stored, a bounded float32 copy at a time
    chunks = [
        unit_grams(video.select(slice(i, i + GRAM_CHUNK))) for i in range(0, len(units), GRAM_CHUNK)
    ]
    for name, file in GRAM_FILES.items():
        np.save(folder / f"{file}.npy", torch.cat([c[name] for c in chunks]).numpy())
    np.save(folder / "frame_times.npy", frame_times.astype(np.float32))
    np.save(folder / "spans.npy", np.asarray(spans, np.float32).reshape(-1, 2))
    np.save(folder / "unit_ids.npy", np.asarray(units, dtype=np.int64))


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
