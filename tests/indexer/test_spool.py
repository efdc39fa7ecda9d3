"""Spools: a long video's units on disk while it is read, given back exactly; stale ones (a
killed worker's) removed when the video is started again or deleted."""

from __future__ import annotations

import dataclasses
import platform

import numpy as np
import pytest
import torch

from indexer.embedder import EmbeddedBatch
from indexer.spool import Spool, release_free_memory, remove_spools
from model import VideoEmbeddings


def _batch(video_id: int, first: int, n: int, seed: int) -> EmbeddedBatch:
    """``n`` units of a video, its segments from ``first``, with random values of each
    field's kind (as the embedder makes them: T = 4, D = 8, 3 key segments)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"global_": (8,), "action_frames": (4, 8), "entity_frames": (4, 8),
              "action_segments": (3, 8), "entity_segments": (3, 8),
              "verb_probs": (5,), "noun_probs": (6,)}  # fmt: skip
    fields = {name: torch.randn(n, *shape, generator=g) for name, shape in shapes.items()}
    fields["frame_mask"] = torch.rand(n, 4, generator=g) > 0.3
    fields["action_spans"] = torch.randint(0, 4, (n, 3, 2), generator=g)
    rng = np.random.default_rng(seed)
    return EmbeddedBatch(
        video_ids=[video_id] * n,
        segments=list(range(first, first + n)),
        embeddings=VideoEmbeddings(**fields),
        frame_times=rng.random((n, 4), dtype=np.float32),
        spans=rng.random((n, 2), dtype=np.float32),
    )


def test_a_spool_gives_back_exactly_what_was_appended(tmp_path) -> None:
    batches = [_batch(7, 0, 3, 0), _batch(7, 3, 1, 1), _batch(7, 4, 5, 2)]
    spool = Spool(tmp_path / "7-x", 7)
    for b in batches:
        spool.append(b)
    got, want = spool.load(), EmbeddedBatch.cat(batches)
    assert spool.rows == len(got) == 9
    assert got.video_ids == want.video_ids and got.segments == list(range(9))
    for f in dataclasses.fields(VideoEmbeddings):
        a, b = getattr(got.embeddings, f.name), getattr(want.embeddings, f.name)
        assert a.dtype == b.dtype and torch.equal(a, b), f.name
    assert np.array_equal(got.frame_times, want.frame_times)
    assert np.array_equal(got.spans, want.spans)
    spool.remove()
    assert not (tmp_path / "7-x").exists()
    with pytest.raises(FileNotFoundError):
        spool.load()


def test_a_spool_refuses_other_videos_and_other_row_shapes(tmp_path) -> None:
    spool = Spool(tmp_path / "7-x", 7)
    with pytest.raises(ValueError, match="other videos"):
        spool.append(_batch(8, 0, 2, 0))
    spool.append(_batch(7, 0, 2, 0))
    wider = _batch(7, 2, 2, 1)
    wider = dataclasses.replace(wider, frame_times=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="frame_times"):
        spool.append(wider)
    with pytest.raises(FileExistsError):  # one spool per folder: never appended to twice
        Spool(tmp_path / "7-x", 7)


def test_remove_spools_removes_every_spool_of_the_videos_but_the_one_kept(tmp_path) -> None:
    for name in ("7-a", "7-b"):
        Spool(tmp_path / name, 7).append(_batch(7, 0, 1, 0))
    for name in ("70-a", "8-a"):  # other videos' (70 starts like 7)
        Spool(tmp_path / name, int(name.split("-")[0]))
    remove_spools(tmp_path, [7], keep=tmp_path / "7-b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7-b", "70-a", "8-a"]
    remove_spools(tmp_path / "absent", [7])  # no spool folder yet: nothing to do


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_free_memory_trims_with_glibc() -> None:
    assert release_free_memory() is True
