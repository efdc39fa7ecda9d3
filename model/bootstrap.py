"""Confidence intervals for retrieval results over training seeds and queries.

An arm's result is a (seeds, queries) array of text-to-video ranks: every seed of the arm
evaluated on the same queries in the same order. Both the seeds and the queries are samples
(another seed trains another model, another corpus has other captions), so the bootstrap
resamples both: each replicate draws seeds with replacement and queries with replacement, and
computes R@k averaged over the drawn seeds. Two arms are compared paired: the same drawn queries
for both arms (their difference does not carry the queries' own spread twice) and the same seed
positions (seed s of each arm trained on the same corpus with the same seed)."""

from __future__ import annotations

import numpy as np

REPLICATES = 10_000


def _hits(ranks: np.ndarray, k: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty (seeds, queries) array, got {ranks.shape}")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based")
    return (ranks <= k).astype(np.float64)


def _draws(seeds: int, queries: int, replicates: int, rng: np.random.Generator):
    """Seed and query indices of each replicate, in chunks (memory stays bounded)."""
    chunk = max(1, 2_000_000 // max(queries, 1))
    for start in range(0, replicates, chunk):
        n = min(chunk, replicates - start)
        yield rng.integers(0, seeds, (n, seeds)), rng.integers(0, queries, (n, queries))


def _replicates(hits: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """R@k (percent) of each bootstrap replicate of a (seeds, queries) hit array."""
    rng = np.random.default_rng(seed)
    seeds = hits.shape[0]
    out = []
    for s_idx, q_idx in _draws(*hits.shape, replicates, rng):
        # each replicate's drawn seeds as weights (a seed drawn twice counts twice), then the
        # weighted hits at the drawn queries
        weights = np.stack([np.bincount(row, minlength=seeds) for row in s_idx]) / seeds
        per_query = weights @ hits
        out.append(np.take_along_axis(per_query, q_idx, axis=1).mean(1) * 100.0)
    return np.concatenate(out)


def recall_interval(
    ranks: np.ndarray, k: int = 1, replicates: int = REPLICATES, seed: int = 0, level: float = 0.95
) -> dict:
    """R@k of one arm: the mean over seeds, each seed's value, and a percentile bootstrap
    interval over seeds and queries."""
    hits = _hits(ranks, k)
    values = _replicates(hits, replicates, seed)
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return {
        "k": k,
        "mean": round(float(hits.mean() * 100), 2),
        "per_seed": [round(float(v), 2) for v in hits.mean(1) * 100],
        "low": round(float(low), 2),
        "high": round(float(high), 2),
        "seeds": hits.shape[0],
        "queries": hits.shape[1],
    }


def paired_difference(
    ranks_a: np.ndarray,
    ranks_b: np.ndarray,
    k: int = 1,
    replicates: int = REPLICATES,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """R@k of arm a minus arm b with a paired percentile bootstrap interval. Both arms need the
    same number of seeds and the same queries in the same order."""
    a, b = _hits(ranks_a, k), _hits(ranks_b, k)
    if a.shape != b.shape:
        raise ValueError(f"arms differ in shape: {a.shape} vs {b.shape} (seeds, queries)")
    values = _replicates(a - b, replicates, seed)
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    diff = (a - b).mean() * 100
    return {
        "k": k,
        "difference": round(float(diff), 2),
        "low": round(float(low), 2),
        "high": round(float(high), 2),
        "established": bool(low > 0 or high < 0),
        "seeds": a.shape[0],
        "queries": a.shape[1],
    }
