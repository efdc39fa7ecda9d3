"""Candidate selection: the level indexes' best videos, cut to the rerank budget by rank fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from index.reader import Build
from index.vectors import FaissStore
from model import TextEmbeddings
from service.search import candidates, candidates_many

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _text(sentence: np.ndarray, verb: np.ndarray, arg: np.ndarray) -> TextEmbeddings:
    """One sentence's embeddings; ``verb`` and ``arg``: one phrase (D,) or several (n, D)."""
    phrases = lambda v: torch.from_numpy(v).view(1, -1, DIM)  # noqa: E731
    return TextEmbeddings(
        global_=torch.from_numpy(sentence).view(1, DIM),
        verb_phrases=phrases(verb),
        arg_phrases=phrases(arg),
        verb_nodes=phrases(verb),
        arg_nodes=phrases(arg),
        verb_mask=torch.ones(1, phrases(verb).shape[1], dtype=torch.bool),
        arg_mask=torch.ones(1, phrases(arg).shape[1], dtype=torch.bool),
        verb_probs=torch.zeros(1, 4),
        noun_probs=torch.zeros(1, 4),
    )


def test_candidates_fuse_the_levels_and_keep_each_levels_best() -> None:
    rng = np.random.default_rng(0)
    store = FaissStore(DIM)
    vectors = {
        v: {
            lv: _unit(rng.normal(size=(n, DIM)))
            for lv, n in (("event", 1), ("action", 3), ("entity", 4))
        }
        for v in range(1, 51)
    }
    for video_id, vecs in vectors.items():
        store.add(video_id, vecs)
    build = Build(Path("."), {}, store, rows={v: (0, v - 1) for v in vectors})
    # the sentence matches video 7's event vector, the verb video 20's action, the argument 33's
    text = _text(vectors[7]["event"][0], vectors[20]["action"][1], vectors[33]["entity"][2])
    assert candidates(build, text, 100) == list(range(1, 51))  # everything when the budget allows
    few = candidates(build, text, 3)
    assert len(few) == 3 and {7, 20, 33} == set(few)
    # reciprocal rank fusion by its definition: sum of 1 / (60 + rank) over the levels' lists
    fused: dict[int, float] = {}
    for level, query in (
        ("event", text.global_),
        ("action", text.verb_nodes[0]),
        ("entity", text.arg_nodes[0]),
    ):
        for rank, hit in enumerate(store.search(level, query.numpy(), 12)[0], start=1):
            fused[hit.video_id] = fused.get(hit.video_id, 0.0) + 1 / (60 + rank)
    expected = sorted(sorted(fused, key=lambda v: (-fused[v], v))[:12])
    assert candidates(build, text, 12) == expected and len(set(fused)) > 12
    # a video with vectors but no rerank rows in the build is no candidate
    rowless = Build(Path("."), {}, store, rows={v: (0, v - 1) for v in vectors if v != 20})
    assert candidates(rowless, text, 100) == [v for v in vectors if v != 20]
    # nor is a tombstoned one, though its vectors are still in the index
    store.delete([33])
    tombstoned = Build(Path("."), {}, store, rows={v: (0, v - 1) for v in vectors if v != 33})
    assert 33 not in candidates(tombstoned, text, 100) and 20 in candidates(tombstoned, text, 3)


def test_candidates_of_several_sentences_at_once_are_each_sentences_own() -> None:
    """One FAISS search per level for all the sentences' vectors (and per distinct limit)
    finds for each sentence exactly what it finds alone."""
    rng = np.random.default_rng(1)
    store = FaissStore(DIM)
    for video_id in range(1, 41):
        store.add(
            video_id,
            {
                lv: _unit(rng.normal(size=(n, DIM)))
                for lv, n in (("event", 1), ("action", 3), ("entity", 4))
            },
        )
    build = Build(Path("."), {}, store, rows={v: (0, v - 1) for v in range(1, 41)})
    texts = [  # one to three phrases of each kind
        _text(*(_unit(rng.normal(size=(n, DIM))) for n in (1, 1 + i % 2, 3 - i % 3)))
        for i in range(4)
    ]
    limits = [5, 12, 5, 40]
    together = candidates_many(build, texts, limits)
    assert together == [candidates(build, t, k) for t, k in zip(texts, limits, strict=True)]
    assert [len(c) for c in together] == [5, 12, 5, 40] and together[0] != together[2]
