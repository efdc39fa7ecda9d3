"""Intervals over seeds and queries (model.bootstrap) and the seed ablation's recipe, which must
be the Makefile's own."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import numpy as np
import pytest

from model.bootstrap import paired_difference, recall_interval

ROOT = Path(__file__).resolve().parents[2]


def _ranks(seeds: int, queries: int, p_first: float, seed: int) -> np.ndarray:
    """Ranks where each query is ranked first with probability p_first, else 2 to 20."""
    rng = np.random.default_rng(seed)
    first = rng.random((seeds, queries)) < p_first
    return np.where(first, 1, rng.integers(2, 21, (seeds, queries)))


def test_interval_is_around_the_mean_and_narrows_with_more_queries() -> None:
    small = recall_interval(_ranks(3, 200, 0.5, 0), replicates=2000)
    large = recall_interval(_ranks(3, 5000, 0.5, 0), replicates=2000)
    for r in (small, large):
        assert r["low"] < r["mean"] < r["high"]
        assert r["low"] < 50 < r["high"]  # the true rate
        assert r["mean"] == pytest.approx(np.mean(r["per_seed"]), abs=0.01)
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 3


def test_spread_between_seeds_widens_the_interval() -> None:
    """Seeds that disagree (one model much better than the others) are a source of doubt that
    resampling the queries alone would hide."""
    alike = np.concatenate([_ranks(1, 2000, 0.5, s) for s in range(3)])
    apart = np.concatenate([_ranks(1, 2000, p, s) for s, p in enumerate((0.3, 0.5, 0.7))])
    a, b = recall_interval(alike, replicates=2000), recall_interval(apart, replicates=2000)
    assert b["high"] - b["low"] > 3 * (a["high"] - a["low"])


def test_paired_difference_finds_a_real_gain_and_not_a_null_one() -> None:
    base = _ranks(3, 1000, 0.4, 1)
    better = base.copy()
    better[:, :150] = 1  # 150 more queries first wherever they were not
    gain = paired_difference(better, base, replicates=2000)
    true_gain = 100 * ((better == 1).mean() - (base == 1).mean())
    assert gain["difference"] == pytest.approx(true_gain, abs=0.01)
    assert 0 < gain["low"] < true_gain < gain["high"] and gain["established"]
    same = paired_difference(base, _ranks(3, 1000, 0.4, 2), replicates=2000)
    assert same["low"] < 0 < same["high"] and not same["established"]
    assert paired_difference(base, base, replicates=500)["high"] == 0.0
    # R@5 counts ranks up to 5: the gain there is smaller (some were already in the top 5)
    assert paired_difference(better, base, k=5, replicates=500)["difference"] < true_gain


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        paired_difference(_ranks(3, 10, 0.5, 0), _ranks(2, 10, 0.5, 0))
    with pytest.raises(ValueError, match="1-based"):
        recall_interval(np.zeros((2, 5), dtype=int))
    with pytest.raises(ValueError, match="seeds, queries"):
        recall_interval(np.ones(5, dtype=int))


def test_seed_ablation_trains_each_arm_as_the_makefile_does() -> None:
    spec = importlib.util.spec_from_file_location(
        "seed_ablation", ROOT / "benchmarks" / "seed_ablation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = module.makefile_recipe()
    make = (ROOT / "Makefile").read_text()
    variables = {
        name.strip(): value.strip()
        for name, _, value in (line.partition(":=") for line in make.splitlines())
        if name.strip() in ("TRAIN_ARGS", "HANET_ARGS")
    }
    targets = {"hanet": "demo-model:", "control": "control-model:", "baseline": "baseline-model:"}
    for arm, target in targets.items():
        line = make.split(target, 1)[1].split("\n")[1]  # the target's command
        for name, value in variables.items():
            line = line.replace(f"$({name})", value)
        expected = shlex.split(line.split("hanet train", 1)[1])
        options = [o for o in expected if o.startswith("--")]
        for skip in ("--data", "--out", "--work-dir", "--seed"):
            options.remove(skip)
        assert sorted(o for o in recipe[arm] if o.startswith("--")) == sorted(options), arm
        assert "--seed" not in recipe[arm]  # each run gets its own
