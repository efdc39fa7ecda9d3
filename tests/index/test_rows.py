"""Rerank row formats (index.rows): int8 rows with per-vector scales against the float32 they
code, builds of either format and of both, compaction moving codes unchanged, and builds
written before formats existed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from index import rows
from index.reader import load_current
from index.vectors import unit_id
from index.writer import IndexWriter, compact, delete_videos, new_build
from model.scores import UNIT_FIELDS, similarity, unit_grams
from tests.index.conftest import CHECKPOINT, add, as_written_before_summaries, videos


def _int8_writer(folder, cfg) -> IndexWriter:
    return IndexWriter(folder, new_build(folder, cfg, CHECKPOINT, "Flat", rows="int8"))


def _units(ids: list[int]) -> list[int]:
    return [unit_id(v, 0) for v in ids]


def test_int8_codes_round_to_within_half_a_step_of_each_vector() -> None:
    g = np.random.default_rng(0)
    x = g.standard_normal((5, 3, 64)).astype(np.float32)
    x[0, 1] = 0  # a zero vector (padding) stays zero
    coded = rows.encode("action_frames", x, "int8")
    assert coded["action_frames"].dtype == np.int8 and coded["action_frames.scale"].shape == (5, 3)
    back = rows.decode("action_frames", coded["action_frames"], coded["action_frames.scale"])
    assert back.dtype == torch.float32 and torch.equal(back[0, 1], torch.zeros(64))
    step = np.abs(x).max(-1, keepdims=True) / 127
    err = np.abs(back.float().numpy() - x)
    assert (err <= step / 2 * (1 + 1e-5)).all() and err.max() > 0
    p = g.random((4, 9)).astype(np.float32)
    probs = rows.decode("verb_probs", rows.encode("verb_probs", p, "int8")["verb_probs"], None)
    assert probs.dtype == torch.float32 and (probs - torch.from_numpy(p)).abs().max() <= 0.5 / 255
    with pytest.raises(rows.RowFormatError):
        rows.encode("global_", x, "int4")


def test_an_int8_build_serves_its_decoded_rows_and_their_grams(tmp_path, cfg) -> None:
    folder = tmp_path / "index"
    writer = _int8_writer(folder, cfg)
    add(writer, [1, 2, 3])
    add(writer, [4, 5])
    build = load_current(folder)
    assert build.manifest["rows"] == "int8"
    part = build.root / "parts" / build.manifest["parts"][0]
    records = np.load(part / f"{rows.RECORDS}.npy")  # a unit's fields in one record
    assert records["entity_segments"].dtype == np.int8
    assert records["entity_segments.scale"].shape == (len(records), cfg.num_entity_segments)
    assert records["gram_entity_segments"].dtype == np.float32
    summary = np.load(part / f"{rows.SUMMARY}.npy")  # what the candidate stage reads
    assert set(summary.dtype.names) == {"global_", "global_.scale", "verb_probs", "noun_probs"}
    assert summary["noun_probs"].dtype == np.uint8 and "global_" not in records.dtype.names
    assert not (part / "entity_segments.npy").exists() and not (part / "noun_probs.npy").exists()
    written = videos(cfg, [5, 1])
    stored, grams = build.rerank_rows(_units([5, 1]))  # across both parts
    assert stored.global_.dtype == torch.float32 and stored.verb_probs.dtype == torch.float32
    for name in ("global_", "action_frames", "entity_segments"):
        diff = (getattr(stored, name).float() - getattr(written, name)).abs().max()
        assert 0 < diff < 0.01
    assert (stored.noun_probs - written.noun_probs).abs().max() <= 0.5 / 255 + 1e-6
    expected = unit_grams(stored)  # of the rows as stored: the scores with or without agree
    assert grams is not None and set(grams) == set(UNIT_FIELDS)
    assert all(torch.equal(grams[n], expected[n]) for n in UNIT_FIELDS)


def test_a_build_with_float16_and_int8_parts_serves_and_compacts_to_one_format(
    index_dir, cfg
) -> None:
    """The fixture's two float16 parts, then an int8 one (a build switched to int8): rows of
    all three in one rerank, each part decoded in its own format; compaction codes the float16
    rows as int8 (the build's format), and the int8 ones again from their float16 decoding:
    within one code step of what they were."""
    writer = IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat")
    writer.build.manifest["rows"] = "int8"
    add(writer, [13, 14])
    build = load_current(index_dir)
    stored, grams = build.rerank_rows(_units([13, 2, 14, 9]))
    written = videos(cfg, [13, 2, 14, 9])
    assert stored.global_.dtype == torch.float32  # float16 and int8 parts together
    assert torch.equal(stored.global_[[1, 3]], written.global_[[1, 3]].half().float())
    int8_diff = (stored.global_[[0, 2]].float() - written.global_[[0, 2]]).abs().max()
    assert 0 < int8_diff < 0.01 and grams is not None
    assert torch.equal(grams["action_frames"], unit_grams(stored)["action_frames"])
    coded = build.stored(_units([13, 14]), "int8")
    assert build.stored(_units([13, 2]), "int8") is None  # two formats: none to move as it is
    assert build.stored(_units([2, 9]), "int8") is None and build.stored(_units([2]), "float16")
    compact(index_dir)
    after = load_current(index_dir)
    again = after.stored(_units([13, 14]), "int8")
    assert len(after.manifest["parts"]) == 1 and again is not None
    for name in rows.VECTOR_FIELDS:
        steps = np.abs(again[name].astype(np.int16) - coded[name])
        assert steps.max() <= 1
        assert np.allclose(again[name + rows.SCALE], coded[name + rows.SCALE], rtol=2e-3)
    recoded = after.embeddings(_units([2, 9])).global_.float()
    assert 0 < (recoded - written.global_[[1, 3]]).abs().max() < 0.01


def test_compaction_of_an_int8_build_moves_codes_and_keeps_scores(tmp_path, cfg) -> None:
    folder = tmp_path / "index"
    writer = _int8_writer(folder, cfg)
    add(writer, [1, 2, 3, 4])
    add(writer, [5, 6])
    before = load_current(folder)
    kept = _units([1, 4, 6])
    coded, (rows_before, grams_before) = before.stored(kept, "int8"), before.rerank_rows(kept)
    delete_videos(folder, [2, 5])
    compact(folder)
    after = load_current(folder)
    assert len(after) == 4 and len(after.manifest["parts"]) == 1
    moved = after.stored(kept, "int8")
    assert set(moved) == set(coded) and all(np.array_equal(moved[k], coded[k]) for k in coded)
    rows_after, grams_after = after.rerank_rows(kept)
    assert torch.equal(rows_after.entity_frames, rows_before.entity_frames)
    assert all(torch.equal(grams_after[n], grams_before[n]) for n in UNIT_FIELDS)


def test_an_int8_build_from_before_summaries_serves_and_compacts_into_them(tmp_path, cfg) -> None:
    """Records parts with the global vectors inside and the probabilities in files of their
    own: the same rows, in memory and read cold; compaction writes one part with summaries."""
    folder = tmp_path / "index"
    add(_int8_writer(folder, cfg), [1, 2, 3])
    kept = _units([3, 1])
    before = load_current(folder).rerank_rows(kept)[0]
    as_written_before_summaries(load_current(folder).root)
    old = load_current(folder)
    part = old.root / "parts" / old.manifest["parts"][0]
    assert not (part / f"{rows.SUMMARY}.npy").exists() and (part / "verb_probs.npy").exists()
    for cold in (False, True):
        if cold:
            old.warm(share=0.0)
        got = old.rerank_rows(kept)[0]
        assert old.paging.cold == cold
        assert all(
            torch.equal(getattr(got, n), getattr(before, n)) for n in ("global_", "noun_probs")
        )
    compact(folder)
    after = load_current(folder)
    part = after.root / "parts" / after.manifest["parts"][0]
    assert (part / f"{rows.SUMMARY}.npy").exists() and not (part / "verb_probs.npy").exists()
    assert torch.equal(after.rerank_rows(kept)[0].global_, before.global_)


def test_a_build_from_before_row_formats_publishes_float16_parts(index_dir, cfg) -> None:
    """A manifest without "rows" (every build before formats existed) keeps float16 parts,
    and its rows score the same with and without their Gram matrices."""
    root = load_current(index_dir).root
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["rows"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    add(IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat"), [13])
    build = load_current(index_dir)
    assert "rows" not in build.manifest
    assert torch.equal(build.embeddings(_units([13])).global_, videos(cfg, [13]).global_.half())
    stored, grams = build.rerank_rows(_units([13, 3]))
    text = _text(cfg)
    fusion = tuple([1 / 7] * 7)
    with_grams = similarity(text, stored, fusion, 10.0, grams=grams)["fused"]
    without = similarity(text, stored, fusion, 10.0)["fused"]
    assert torch.allclose(with_grams, without, atol=1e-5)


def _text(cfg):
    """One sentence's embeddings in ``cfg``'s shapes (two verb and two argument phrases)."""
    from model import TextEmbeddings

    g = torch.Generator().manual_seed(7)
    d = cfg.embed_dim

    def unit(*shape):
        x = torch.randn(*shape, d, generator=g)
        return x / x.norm(dim=-1, keepdim=True)

    return TextEmbeddings(
        global_=unit(1),
        verb_phrases=unit(1, 2),
        arg_phrases=unit(1, 2),
        verb_nodes=unit(1, 2),
        arg_nodes=unit(1, 2),
        verb_mask=torch.ones(1, 2, dtype=torch.bool),
        arg_mask=torch.ones(1, 2, dtype=torch.bool),
        verb_probs=torch.rand(1, cfg.num_verbs, generator=g),
        noun_probs=torch.rand(1, cfg.num_nouns, generator=g),
    )
