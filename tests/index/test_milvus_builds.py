"""Builds in Milvus Lite: workers publish without a lock, a delete wins over a worker that still
held the video, and a rebuild's build (its own collections) swaps in with one pointer write,
after which the old checkpoint's workers and readers are refused (the checkpoint guard)."""

from __future__ import annotations

import numpy as np
import pytest

from index.reader import BuildError
from index.vectors import unit_id
from tests.index.conftest import CHECKPOINT, times, videos

pytest.importorskip("pymilvus")
NEW = "d" * 64


@pytest.fixture
def target(tmp_path):
    from index.milvus import MilvusTarget

    return MilvusTarget(str(tmp_path / "builds.db"), prefix="builds")


def _publish(writer, cfg, ids: list[int], seed: int = 0) -> list[int]:
    return writer.publish(ids, videos(cfg, ids, seed), times(cfg, len(ids)))


def _find(build, cfg, video_id: int, seed: int = 0) -> int:
    """The video whose event vector is the query's: the top unit's video."""
    query = videos(cfg, [video_id], seed).global_.numpy()
    ids, _, _ = build.top_units("event", query, 1)[0]
    return int(ids[0]) >> 20 if len(ids) else -1


def test_a_delete_wins_and_a_rebuild_swaps_in_behind_the_checkpoint_guard(target, cfg) -> None:
    from index.milvus_index import (
        MilvusLive,
        MilvusWriter,
        delete_videos,
        promote,
        start_build,
        stored_units,
    )

    old = MilvusWriter.open(target, cfg, CHECKPOINT, "Flat")
    assert _publish(old, cfg, [1, 2, 3]) == [1, 2, 3]
    live = MilvusLive(target, expect_checkpoint=CHECKPOINT)
    build = live.current()
    assert build.name.endswith("/milvus") and _find(build, cfg, 2) == 2
    rows, grams = build.rerank_rows([unit_id(3, 0), unit_id(1, 0)])
    want = videos(cfg, [3, 1])
    assert torch_close(rows.global_, want.global_) and grams is not None
    assert build.span(unit_id(1, 0))[1] == pytest.approx(float(times(cfg, 1)[0, -1] + 0.125))

    delete_videos(target, [2])  # gone from search at once; a worker still holding it: refused
    assert build.known(np.array([unit_id(2, 0), unit_id(1, 0)])).tolist() == [False, True]
    assert _publish(old, cfg, [2, 4]) == [4]
    assert stored_units(build) == {unit_id(v, 0) for v in (1, 3, 4)}

    rebuild = start_build(target, cfg, NEW, "Flat")  # the old build keeps serving meanwhile
    assert _publish(rebuild, cfg, [1, 3, 4], seed=1) == [1, 3, 4]
    delete_videos(target, [3])  # reaches the rebuild's build too
    assert live.current(wait=True).name == build.name
    promote(target, drop_old=True)

    with pytest.raises(BuildError, match="checkpoint"):
        live.current(wait=True)  # the old model's API: not ready, as with FAISS builds
    with pytest.raises(BuildError):
        _publish(old, cfg, [5])  # the old checkpoint's worker gives its jobs back
    with pytest.raises(BuildError):
        MilvusWriter.open(target, cfg, CHECKPOINT, "Flat")
    new = MilvusLive(target, expect_checkpoint=NEW).current()
    assert new.manifest["version"] == 2 and new.video_ids() == [1, 4]
    assert _find(new, cfg, 4, seed=1) == 4
    assert MilvusWriter.open(target, cfg, NEW, "Flat").build.name == new.name


def test_workers_starting_together_share_one_first_build(target, cfg) -> None:
    from index.milvus_index import MilvusWriter, stored_units

    a = MilvusWriter.open(target, cfg, CHECKPOINT, "Flat")
    b = MilvusWriter.open(target, cfg, CHECKPOINT, "Flat")  # before either published
    _publish(a, cfg, [1, 2])
    _publish(b, cfg, [2, 3])  # a video written twice (a job taken over): stored once
    assert a.build.name == b.build.name
    assert stored_units(a.build) == {unit_id(v, 0) for v in (1, 2, 3)}
    assert a.build.vectors.count("action") == 3 * cfg.num_action_segments


def torch_close(a, b) -> bool:
    return bool(np.allclose(a.float().numpy(), b.float().numpy(), atol=1e-3))
