"""A long video's embedded units on disk while it is read, so that the indexer's memory does not
grow with the video's length.

``Spool`` appends each batch of a video's units to one raw file per field in a folder of its own
(``<spool_dir>/<video_id>-<writer>``) and maps the files back, copy-on-write, when the video is
published: the index reads the rows from the page cache, not from the indexer's heap. A spool
belongs to one ``BatchWriter``: a worker killed mid-video leaves a partial one, which is never
read (the video's job is taken again from its start) and is removed when a writer starts that
video again (``remove_spools``) or the video is deleted.

``release_free_memory`` hands memory that the C allocator keeps after frees back to the system
(glibc's ``malloc_trim``): decoding and the model free large blocks between the small ones the
writer keeps, and without a trim that freed memory stays in the process's heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import shutil
from pathlib import Path

import numpy as np
import torch

from indexer.embedder import EmbeddedBatch
from model import VideoEmbeddings


class Spool:
    """One video's embedded units, appended batch by batch to ``folder`` (created here).
    ``rows``: units appended so far."""

    def __init__(self, folder: Path, video_id: int) -> None:
        folder.mkdir(parents=True, exist_ok=False)
        self.folder, self.video_id, self.rows = folder, video_id, 0
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}  # field -> row shape, dtype

    def append(self, batch: EmbeddedBatch) -> None:
        """Add ``batch``'s units (all of this video, in segment order) after those appended."""
        if set(batch.video_ids) - {self.video_id}:
            raise ValueError(f"units of other videos in video {self.video_id}'s spool")
        for name, array in _arrays(batch).items():
            layout = (array.shape[1:], array.dtype)
            if self._layout.setdefault(name, layout) != layout:
                raise ValueError(f"{name}: rows of {layout}, not {self._layout[name]} as before")
            with open(self.folder / name, "ab") as f:
                f.write(np.ascontiguousarray(array).tobytes())
        self.rows += len(batch)

    def load(self) -> EmbeddedBatch:
        """Every unit appended, as tensors on memory maps of the files (copy-on-write: nothing
        written back). ``FileNotFoundError`` when the folder was removed meanwhile."""
        if not self.rows:
            raise ValueError(f"video {self.video_id}'s spool is empty")
        arrays = {
            name: np.memmap(self.folder / name, dtype, mode="c", shape=(self.rows, *shape))
            for name, (shape, dtype) in self._layout.items()
        }
        fields = dataclasses.fields(VideoEmbeddings)
        embeddings = VideoEmbeddings(**{f.name: torch.from_numpy(arrays[f.name]) for f in fields})
        return EmbeddedBatch(
            video_ids=[self.video_id] * self.rows,
            segments=arrays["segments"].tolist(),
            embeddings=embeddings,
            frame_times=arrays["frame_times"],
            spans=arrays["spans"],
        )

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _arrays(batch: EmbeddedBatch) -> dict[str, np.ndarray]:
    """Every per-unit array of ``batch``, by field name (row i: unit i)."""
    arrays = {
        f.name: getattr(batch.embeddings, f.name).detach().cpu().numpy()
        for f in dataclasses.fields(VideoEmbeddings)
    }
    arrays["frame_times"] = np.asarray(batch.frame_times, np.float32)
    arrays["spans"] = np.asarray(batch.spans, np.float32)
    arrays["segments"] = np.asarray(batch.segments, np.int64)
    return arrays


def remove_spools(spool_dir: Path, video_ids: list[int], *, keep: Path | None = None) -> None:
    """Remove every spool of these videos in ``spool_dir`` (left by a worker that died holding
    them), except ``keep``."""
    if not spool_dir.is_dir():
        return
    for video_id in video_ids:
        for folder in spool_dir.glob(f"{int(video_id)}-*"):
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or not Linux)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Give the memory the C allocator holds free back to the system; whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
