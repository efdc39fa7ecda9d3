"""The candidate stage's cut (service.candidates): the union of the lists ranked by an
estimate of the score the rerank ranks by. With the rows in memory its global and concept
parts are the model's own scores; read cold, the lists' scores stand in for them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from index.reader import load_current
from index.vectors import unit_id
from model import TextEmbeddings, scores
from model.config import SCORE_NAMES, SPEC_FUSION
from service import candidates as stage
from service.candidates import Depth, Found, candidates, estimate
from tests.index.conftest import as_written_before, as_written_before_summaries, videos


def _sentence(build, vectors_of: int, concepts_of: int) -> TextEmbeddings:
    """A sentence whose vectors are one unit's and whose concepts are another's."""
    rows = build.embeddings([unit_id(vectors_of, 0), unit_id(concepts_of, 0)])
    g = rows.global_[0:1].float()
    return TextEmbeddings(
        global_=g,
        verb_phrases=g[None],
        arg_phrases=g[None],
        verb_nodes=g[None],
        arg_nodes=g[None],
        verb_mask=torch.ones(1, 1, dtype=torch.bool),
        arg_mask=torch.ones(1, 1, dtype=torch.bool),
        verb_probs=rows.verb_probs[1:2].float(),
        noun_probs=rows.noun_probs[1:2].float(),
    )


def _exact(build, text: TextEmbeddings, units: list[int], rank_by: str) -> np.ndarray:
    got = scores.similarity(text, build.embeddings(units), SPEC_FUSION, 10.0)
    return got[rank_by][0].numpy()


def test_weights_of_name_each_score_as_similarity_gives_it(cfg) -> None:
    video = videos(cfg, [1, 2, 3])
    build_free = TextEmbeddings(
        global_=video.global_[0:1].float(),
        verb_phrases=video.action_frames[0:1, :2].float(),
        arg_phrases=video.entity_frames[0:1, :2].float(),
        verb_nodes=video.action_segments[0:1, :2].float(),
        arg_nodes=video.entity_segments[0:1, :2].float(),
        verb_mask=torch.ones(1, 2, dtype=torch.bool),
        arg_mask=torch.ones(1, 2, dtype=torch.bool),
        verb_probs=video.verb_probs[0:1].float(),
        noun_probs=video.noun_probs[0:1].float(),
    )
    fusion = (0.3, 0.1, 0.05, 0.2, 0.1, 0.15, 0.1)
    got = scores.similarity(build_free, video, fusion, 10.0)
    for name in (*SCORE_NAMES, "embedding", "concept", "fused"):
        weighted = scores.fuse(got, scores.weights_of(name, fusion))
        torch.testing.assert_close(weighted, got[name], msg=name)
    assert scores.weights_of("global", fusion) == (1.0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="no score named"):
        scores.weights_of("loudness", fusion)


@pytest.mark.parametrize("rank_by", ["global", "concept"])
def test_in_memory_the_estimate_is_the_models_global_and_concept_score(index_dir, rank_by) -> None:
    build = load_current(index_dir)
    text = _sentence(build, 1, 12)
    units = np.array(sorted(build.rows)[:5], np.int64)
    listed = Found("event", units[:2], np.array([0.9, 0.8], np.float32))  # made-up scores
    got, fused = estimate(build, text, [listed], scores.weights_of(rank_by, SPEC_FUSION))
    assert got.tolist() == units[:2].tolist()  # the union of the lists
    exact = _exact(build, text, got.tolist(), rank_by)
    np.testing.assert_allclose(fused, exact, atol=1e-3)  # the rows are float16


def test_lists_scores_stand_in_and_a_unit_missing_from_a_list_gets_its_lowest(index_dir) -> None:
    build = load_current(index_dir)
    text = _sentence(build, 1, 12)
    a, b, c = sorted(build.rows)[:3]
    action = Found("action", np.array([a, b]), np.array([0.9, 0.5], np.float32))
    entity = Found("entity", np.array([c, a]), np.array([0.7, 0.4], np.float32))
    weights = (0.0, 0.1, 0.2, 0.3, 0.4, 0.0, 0.0)  # what the rows cannot give: lists only
    got, fused = estimate(build, text, [action, entity], weights)
    assert got.tolist() == [a, b, c]
    want = [0.4 * 0.9 + 0.6 * 0.4, 0.4 * 0.5 + 0.6 * 0.4, 0.4 * 0.5 + 0.6 * 0.7]
    np.testing.assert_allclose(fused, want, rtol=1e-6)


def _cold_estimate(index_dir) -> tuple[np.ndarray, ...]:
    """The estimate of three units read cold from an event and a concept list: the units,
    the estimate, the exact concept part (both concept scores weigh 0.25) and the exact
    global score."""
    build = load_current(index_dir)
    build.warm(share=0.0)  # rows read cold: only the summaries (or probabilities) are read
    assert build.paging.cold
    text = _sentence(build, 1, 12)
    a, b, c = sorted(build.rows)[:3]
    event = Found("event", np.array([a, b]), np.array([0.9, 0.5], np.float32))
    concept = Found("concept", np.array([c, a]), np.array([1.2, 0.4], np.float32))
    got, fused = estimate(build, text, [event, concept], SPEC_FUSION)
    assert got.tolist() == [a, b, c]
    concepts = 0.25 * _exact(build, text, [a, b, c], "concept") * 2
    return got, fused, concepts, _exact(build, text, [a, b, c], "global")


def test_read_cold_the_summaries_give_the_exact_global_and_concept_scores(index_dir) -> None:
    _, fused, concepts, exact_global = _cold_estimate(index_dir)
    want = SPEC_FUSION[0] * exact_global + concepts
    np.testing.assert_allclose(fused, want, atol=1e-3)  # the rows are float16
    assert np.abs(fused - (SPEC_FUSION[0] * np.array([0.9, 0.5, 0.5]) + concepts)).max() > 0.01


def test_read_cold_before_summaries_the_event_list_stands_in_for_global(index_dir) -> None:
    as_written_before_summaries(load_current(index_dir).root)  # global inside the records
    _, fused, concepts, _ = _cold_estimate(index_dir)
    want = SPEC_FUSION[0] * np.array([0.9, 0.5, 0.5]) + concepts
    np.testing.assert_allclose(fused, want, atol=1e-5)


def test_read_cold_a_part_of_files_per_field_gives_the_global_score_too(index_dir) -> None:
    as_written_before(load_current(index_dir).root)  # parts as written before records
    build = load_current(index_dir)
    build.warm(share=0.0)
    text = _sentence(build, 1, 12)
    units = sorted(build.rows)[:3]
    event = Found("event", np.array(units[:1]), np.array([0.9], np.float32))  # made up
    got, fused = estimate(build, text, [event], scores.weights_of("global", SPEC_FUSION))
    np.testing.assert_allclose(fused, _exact(build, text, got.tolist(), "global"), atol=1e-3)


@pytest.mark.parametrize("rank_by", ["global", "concept"])
def test_the_cut_keeps_the_best_units_by_the_ranking_score(index_dir, rank_by) -> None:
    """Exact level indexes (Flat) and rows in memory: the 3 candidates are the 3 best units of
    the build by the score the rerank ranks by, whichever list found them."""
    build = load_current(index_dir)
    text = _sentence(build, 1, 12)
    every = sorted(build.rows)
    exact = _exact(build, text, every, rank_by)
    best = sorted(np.array(every)[np.argsort(-exact, kind="stable")[:3]].tolist())
    weights = scores.weights_of(rank_by, SPEC_FUSION)
    assert candidates(build, text, 3, weights=weights) == best
    by_rank = candidates(build, text, 3)  # reciprocal rank fusion, as "more like this" is cut
    assert len(by_rank) == 3


def test_only_the_shortlist_gets_exact_scores_and_it_ranks_first(index_dir) -> None:
    build = load_current(index_dir)
    text = _sentence(build, 1, 12)
    a, b, c = sorted(build.rows)[:3]
    event = Found("event", np.array([c, a, b]), np.array([0.9, 0.6, 0.5], np.float32))
    weights = scores.weights_of("global", SPEC_FUSION)
    got, fused = estimate(build, text, [event], weights, shortlist=1)
    assert got.tolist() == [a, b, c]
    exact_c = _exact(build, text, [c], "global")[0]
    np.testing.assert_allclose(fused[2], exact_c, atol=1e-3)  # the list's best, exactly
    assert fused[0] < fused[2] and fused[1] < fused[2]  # the rest after it...
    assert fused[0] > fused[1]  # ...in the lists' order (0.6 before 0.5)
    assert fused[0] - fused[1] == pytest.approx(0.1, abs=1e-5)


@pytest.mark.parametrize("weights", [None, SPEC_FUSION])  # reciprocal rank, the estimate
def test_the_concept_list_brings_in_what_the_levels_miss(index_dir, weights) -> None:
    """A sentence whose vectors are video 1's but whose concepts are video 12's: the levels
    nominate 1 and its neighbours, the concept scan 12. Cut by the estimate, 12 is in even
    without the concept list: the levels' lists, read deeper, hold it, and its exact concept
    score ranks it in."""
    build = load_current(index_dir)
    text = _sentence(build, 1, 12)
    without = candidates(build, text, 3, concepts=False, weights=weights)
    with_concepts = candidates(build, text, 3, weights=weights)
    assert unit_id(1, 0) in without
    assert (unit_id(12, 0) in without) == (weights is not None)
    assert unit_id(12, 0) in with_concepts and len(with_concepts) == 3


def test_exact_scores_for_more_of_the_union_bring_in_what_the_lists_rank_low(index_dir) -> None:
    """``Depth.exact``: with exact scores for only the 3 units the lists estimate best, video
    12 (whose concepts the sentence has, not its vectors) stays out; with them for 5 times the
    candidates or the whole union (0), its exact concept score ranks it in. Read cold, with
    the summaries in memory or not, the cut is the same as with the rows in memory."""
    warm = load_current(index_dir)
    text = _sentence(warm, 1, 12)

    def cut(build, exact: int) -> list[int]:
        return candidates(
            build, text, 3, concepts=False, weights=SPEC_FUSION, depth=Depth(2, exact)
        )

    assert unit_id(12, 0) not in cut(warm, 1)
    assert unit_id(12, 0) in cut(warm, 5) and unit_id(12, 0) in cut(warm, 0)
    for summaries in (1.0, 0.0):
        cold = load_current(index_dir)
        cold.warm(share=0.0, summaries=summaries)
        assert cold.paging.cold and cold.paging.summaries == bool(summaries)
        assert [cut(cold, e) for e in (1, 5, 0)] == [cut(warm, e) for e in (1, 5, 0)]


def test_each_list_is_read_depth_lists_times_the_candidates(index_dir, monkeypatch) -> None:
    build = load_current(index_dir)
    text = _sentence(build, 1, 12)
    asked = []

    def level(build, level, queries, k, among):
        asked.append((level, k))
        return top_units(build, level, queries, k, among)

    def concept(build, verbs, nouns, k, among):
        asked.append(("concept", k))
        return top_concepts(build, verbs, nouns, k, among)

    top_units, top_concepts = stage.top_units, stage.concept_source.top_units
    monkeypatch.setattr(stage, "top_units", level)
    monkeypatch.setattr(stage.concept_source, "top_units", concept)
    for lists in (1, 3):
        asked.clear()
        candidates(build, text, 4, weights=SPEC_FUSION, depth=Depth(lists, 5))
        sources = ["event", "action", "entity", "concept"]
        assert asked == [(source, 4 * lists) for source in sources]  # one unit per video here
