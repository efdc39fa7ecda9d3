"""What the job builds, used: deletes and compaction, and search against full scoring.

These check the index and the search on a build the real job made from decoded videos (the
index and service packages test the same with generated vectors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from index.reader import load_current
from indexer.job import IndexingCfg, run_indexing
from tests.index.conftest import as_written_before


def test_delete_is_immediate_and_compaction_drops_the_rows(
    tmp_path, fill, model, monkeypatch
) -> None:
    from index import parts as build_module
    from index.writer import compact, delete_videos

    engine = fill()
    cfg = IndexingCfg(batch_size=5, decode_workers=1)
    run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    before = load_current(tmp_path / "index")
    victim = before.video_ids()[3]
    query = before.embeddings(before.units(victim)).global_.numpy()
    assert before.vectors.search("event", query, 1)[0][0].video_id == victim
    delete_videos(tmp_path / "index", [victim])
    after = load_current(tmp_path / "index")
    assert victim not in after
    for level in ("event", "action", "entity"):
        assert victim not in {h.video_id for h in after.vectors.search(level, query, 50)[0]}
    assert after.manifest["counts"]["event"] == 12  # still in the files
    monkeypatch.setattr(build_module, "GRAM_CHUNK", 4)  # the 11 rows' Gram matrices in 3 goes
    compacted = compact(tmp_path / "index")
    assert compacted.manifest["counts"]["event"] == 11 and len(compacted.manifest["parts"]) == 1
    again = load_current(tmp_path / "index")
    assert again.video_ids() == sorted(set(before.video_ids()) - {victim})
    keep = again.units(again.video_ids()[0])
    assert torch.equal(again.embeddings(keep).global_, before.embeddings(keep).global_)
    live = sorted(again.rows)  # the units of the videos left
    rewritten, original = again.grams(live), before.grams(live)
    assert rewritten is not None and original is not None
    assert all(torch.equal(rewritten[k], original[k]) for k in original)


def test_search_with_enough_candidates_equals_full_scoring(tmp_path, fill, model) -> None:
    from service.search import search

    engine = fill()
    cfg = IndexingCfg(batch_size=6, decode_workers=1)
    run_indexing(engine, model, tmp_path / "index", cfg, progress=False)
    build = load_current(tmp_path / "index")
    query = "a small red star moves left, then a blue circle grows"
    hits = search(model, build, query, top_k=12, rerank=12)
    everything = [u for v in build.video_ids() for u in build.units(v)]  # clips: one unit each
    assert len(everything) == 12
    with torch.inference_mode():
        text = model.encode_text([query])
        full = model.similarity(text, build.embeddings(everything))["fused"][0]
    expected = [build.video_ids()[i] for i in full.argsort(descending=True).tolist()]
    assert [h.video_id for h in hits] == expected
    assert all(len(h.moments) == 1 and h.moments[0].score == h.score for h in hits)
    assert hits[0].score == pytest.approx(float(full.max()), abs=1e-6)
    assert all(0 <= h.start_s < h.end_s <= 2.0 for h in hits)
    # a build written before the Gram matrices were stored scores the same from its rows
    as_written_before(build.root, grams=False)
    older = load_current(tmp_path / "index")
    assert older.grams(everything) is None
    again = search(model, older, query, top_k=12, rerank=12)
    assert [h.video_id for h in again] == expected
    assert [h.score for h in again] == pytest.approx([h.score for h in hits], abs=1e-5)
    assert [(h.start_s, h.end_s) for h in again] == [(h.start_s, h.end_s) for h in hits]


def test_a_moment_covers_the_stretch_its_frames_stand_for() -> None:
    from service.search import moment_seconds

    times = (np.arange(8) + 0.5) * 0.25  # 8 frames sampled at the middle of 2 s / 8 bins
    assert moment_seconds(times, 0, 0) == (0.0, 0.25)
    assert moment_seconds(times, 2, 6) == (0.5, 1.75)
    assert moment_seconds(times, 7, 7) == (1.75, 2.0)
    assert moment_seconds(np.array([0.0, 0.5, 2.0]), 1, 1) == (0.25, 1.25)  # uneven samples
    assert moment_seconds(np.array([0.4]), 0, 0) == (0.4, 0.4)  # a one-frame video
