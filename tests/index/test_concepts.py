"""The concept scan (index.concepts): the units a sentence's concept probabilities match best,
as the model's own soft Jaccard ranks them, over a real build's parts; live units only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from index import concepts
from index.live import LiveIndex
from index.reader import Build, load_current
from index.vectors import unit_id, video_of
from index.writer import IndexWriter, delete_videos
from model import scores
from tests.index.conftest import CHECKPOINT, add

DEFAULTS = (concepts.TOP_CONCEPTS, concepts.QUERY_CONCEPTS)  # the service's list lengths


def _brute_force(
    build: Build, verbs: np.ndarray, nouns: np.ndarray, k: int, videos=None, with_scores=False
):
    """The best ``k`` live units by model.scores.jaccard (verbs + nouns), ties by id (and
    their scores, ``with_scores``)."""
    units = sorted(u for u in build.rows if videos is None or video_of(u) in set(videos))
    rows = build.embeddings(units)
    score = (
        scores.jaccard(torch.from_numpy(verbs)[None], rows.verb_probs)[0]
        + scores.jaccard(torch.from_numpy(nouns)[None], rows.noun_probs)[0]
    )
    order = sorted(range(len(units)), key=lambda i: (-float(score[i]), units[i]))[:k]
    best = [units[i] for i in order]
    return (best, [float(score[i]) for i in order]) if with_scores else best


def _queries(cfg, count: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield (
            rng.random(cfg.num_verbs).astype(np.float32),
            rng.random(cfg.num_nouns).astype(np.float32),
        )


@pytest.fixture(autouse=True)
def every_concept_listed(cfg, monkeypatch) -> None:
    """Lists of every concept (more than any vocabulary here): the lists' min-sums are then
    exact, and their ranking the model's score's."""
    monkeypatch.setattr(concepts, "TOP_CONCEPTS", 1000)
    monkeypatch.setattr(concepts, "QUERY_CONCEPTS", 1000)


@pytest.mark.parametrize("chunk", [4, 1 << 16])  # rows read at once: chunks joined, or one
def test_the_lists_rank_as_the_models_concept_score(index_dir, cfg, monkeypatch, chunk) -> None:
    monkeypatch.setattr(concepts, "CHUNK", chunk)
    build = load_current(index_dir)
    assert len(build.parts) == 2  # two parts, each scanned
    for verbs, nouns in _queries(cfg, 8):
        got, score = concepts.top_units(build, verbs, nouns, 5)
        want, want_score = _brute_force(build, verbs, nouns, 5, with_scores=True)
        assert got.tolist() == want
        np.testing.assert_allclose(score, want_score, rtol=1e-5)  # the model's concept score
    # a unit's own stored probabilities find it first
    first = build.embeddings([unit_id(9, 0)])
    own = (first.verb_probs[0].numpy(), first.noun_probs[0].numpy())
    assert concepts.top_units(build, *own, 3)[0][0] == unit_id(9, 0)
    assert len(concepts.top_units(build, *own, 100)[0]) == 12  # never more than the live units


def test_deleted_and_reindexed_units_are_scanned_as_they_now_are(index_dir, cfg) -> None:
    before = load_current(index_dir)
    old = {v: before.embeddings([unit_id(v, 0)]) for v in (3, 8)}
    delete_videos(index_dir, [3])
    add(IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat"), [8], seed=5)  # a newer part
    build = load_current(index_dir)
    assert len(build.parts) == 3
    for v in (3, 8):  # the old rows would come first for their own probabilities
        probs = (old[v].verb_probs[0].numpy(), old[v].noun_probs[0].numpy())
        got = concepts.top_units(build, *probs, 11)[0].tolist()
        assert got == _brute_force(build, *probs, 11)
        assert unit_id(3, 0) not in got and len(got) == len(set(got)) == 11
    assert _brute_force(build, *probs, 1) != [unit_id(8, 0)]  # the new row of 8 is another


def test_a_filtered_scan_keeps_to_its_videos(index_dir, cfg) -> None:
    build = load_current(index_dir)
    among = np.array([2, 5, 11])
    for verbs, nouns in _queries(cfg, 4, seed=2):
        got = concepts.top_units(build, verbs, nouns, 2, among)[0]
        assert got.tolist() == _brute_force(build, verbs, nouns, 2, among)
        assert set(video_of(got).tolist()) <= {2, 5, 11}


def test_nothing_to_scan_is_none(index_dir, cfg, tmp_path) -> None:
    build = load_current(index_dir)
    verbs, nouns = next(_queries(cfg, 1))
    assert concepts.top_units(build, verbs * 0, nouns * 0, 5) is None  # the sentence names none
    assert concepts.top_units(build, verbs[:0], nouns[:0], 5) is None  # no concept vocabulary
    assert concepts.top_units(build, verbs, nouns, 0) is None
    partless = Build(tmp_path, {}, build.vectors, rows=dict(build.rows))
    assert concepts.top_units(partless, verbs, nouns, 5) is None
    assert concepts.top_units(object(), verbs, nouns, 5) is None  # not a FAISS build (Milvus)
    empty = concepts._Lists.of(np.zeros((5, 0), np.uint8))  # rows of a model without concepts
    assert len(empty.rows) == 0 and empty.min_sums(np.zeros(0, np.float32), 5).tolist() == [0] * 5


def test_short_lists_still_find_a_units_own_concepts_first(index_dir, monkeypatch) -> None:
    """With the service's list lengths (a unit under its few most probable concepts only),
    each unit's own probabilities find it first, and the lists hold that few entries."""
    monkeypatch.setattr(concepts, "TOP_CONCEPTS", DEFAULTS[0])
    monkeypatch.setattr(concepts, "QUERY_CONCEPTS", DEFAULTS[1])
    build = load_current(index_dir)
    for unit in sorted(build.rows):
        own = build.embeddings([unit])
        probs = (own.verb_probs[0].numpy(), own.noun_probs[0].numpy())
        assert concepts.top_units(build, *probs, 3)[0][0] == unit
    lists = concepts._parts(build).lists
    assert sum(len(p[f].rows) for p in lists for f in concepts.FIELDS) == 12 * 2 * DEFAULTS[0]


def test_lists_are_made_once_per_part_file_as_builds_are_read(index_dir, cfg) -> None:
    live = LiveIndex(index_dir, expect_checkpoint=CHECKPOINT)
    first = live.current()
    assert "_concept_parts" in first.__dict__  # made as the build was read, not by a search
    made = concepts._parts(first).lists
    add(IndexWriter.open(index_dir, cfg, CHECKPOINT, "Flat"), [13])  # a publish: a third part
    delete_videos(index_dir, [2])  # and a tombstone-only version after it
    second = live.current(wait=True)
    lists = concepts._parts(second).lists
    assert len(lists) == 3 and lists[0] is made[0] and lists[1] is made[1]  # the same files
    verbs, nouns = next(_queries(cfg, 1, seed=3))
    assert concepts.top_units(second, verbs, nouns, 13)[0].tolist() == _brute_force(
        second, verbs, nouns, 13
    )
    off = LiveIndex(index_dir, expect_checkpoint=CHECKPOINT, concepts=False).current()
    assert "_concept_parts" not in off.__dict__  # HANET_SEARCH_CONCEPTS=false: none made
