"""HANet against its controls over several training seeds, with bootstrap intervals.

Three arms on the demo recipe (the Makefile's TRAIN_ARGS and HANET_ARGS, read from the Makefile
so the recipe has one definition):

- ``hanet``: the demo model's recipe (``make demo-model``);
- ``control``: meanP over the same motion input (``make control-model``: the motion stream and
  temporal convolution train, pooling stays the mean, the score is the global one);
- ``baseline``: meanP without the motion input (``make baseline-model``).

Each arm is trained once per seed (the same corpus, ``--seed`` changes the initialisation and the
batches), evaluated on the test and compositional splits with per-caption ranks
(``hanet eval --json``), and summarised with ``model.bootstrap``: R@1 and R@5 per arm with a 95%
interval over seeds and captions, and the paired differences between arms. Runs already done in
``--work`` are reused, so an interrupted run continues where it stopped.

    python benchmarks/seed_ablation.py --data hanet-data/synth-2000-seed0 --work abl \
        --seeds 0 1 2 --parallel 3

On a GPU the nine runs of the recipe fit in minutes at ``--parallel 9``; on a CPU each one takes
tens of minutes. Prints a Markdown table and writes ``summary.json`` into ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.bootstrap import paired_difference, recall_interval  # noqa: E402

HANET = [sys.executable, "-c", "from service.cli import app; app()"]
ARMS = ("hanet", "control", "baseline")
SPLITS = ("test", "compositional")
COMPARISONS = (("hanet", "control"), ("hanet", "baseline"), ("control", "baseline"))


def makefile_recipe(makefile: Path = ROOT / "Makefile") -> dict[str, list[str]]:
    """Each arm's ``hanet train`` options, from the Makefile's variables and targets (without
    --seed)."""
    values = {}
    for line in makefile.read_text().splitlines():
        name, sep, value = line.partition(":=")
        if sep and name.strip() in ("TRAIN_ARGS", "HANET_ARGS"):
            values[name.strip()] = shlex.split(value)
    train = values["TRAIN_ARGS"]
    if "--seed" in train:
        at = train.index("--seed")
        train = train[:at] + train[at + 2 :]
    train.append("--save-half")  # as every Makefile model target
    motion = values["HANET_ARGS"]
    return {
        "hanet": [*train, *motion],
        "control": [*train, "--objective", "global-motion", *motion],
        "baseline": [*train, "--objective", "global"],
    }


def _run_all(commands: list[tuple[list[str], Path, Path]], parallel: int, env: dict) -> None:
    """Run (command, log, done marker) triples, ``parallel`` at a time; the marker is touched
    when a command succeeds (a rerun skips it); stop at the first failure."""
    waiting, running = list(commands), []
    while waiting or running:
        while waiting and len(running) < parallel:
            cmd, log, done = waiting.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"start: {shlex.join(cmd[3:])}  (log {log})", flush=True)
            proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
            running.append((proc, log, done, time.monotonic()))
        time.sleep(1)
        for item in list(running):
            proc, log, done, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                for other in running:
                    other[0].terminate()
                sys.exit(f"failed ({proc.returncode}): see {log}")
            done.touch()
            print(f"done in {time.monotonic() - started:.0f} s: {log}", flush=True)


def train_and_evaluate(args: argparse.Namespace) -> None:
    recipe = makefile_recipe()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    runs = [
        (arm, seed, args.work / f"{arm}-seed{seed}") for arm in args.arms for seed in args.seeds
    ]
    train = [
        (
            [
                *HANET,
                "train",
                "--data",
                str(args.data),
                "--out",
                str(folder / "model.pt"),
                "--work-dir",
                str(folder / "train"),
                *recipe[arm],
                "--seed",
                str(seed),
                *shlex.split(args.extra_train_args),
                *(["--resume"] if (folder / "train" / "train_state.pt").exists() else []),
            ],
            folder / "train.log",
            folder / "trained",
        )
        for arm, seed, folder in runs
        if not (folder / "trained").exists()
    ]
    _run_all(train, args.parallel, env)
    evals = [
        (
            [
                *HANET,
                "eval",
                "--checkpoint",
                str(folder / "model.pt"),
                "--data",
                str(args.data),
                "--split",
                split,
                "--json",
                str(folder / f"eval-{split}.json"),
            ],
            folder / f"eval-{split}.log",
            folder / f"eval-{split}.json",  # written last: its presence means done
        )
        for _, _, folder in runs
        for split in SPLITS
        if not (folder / f"eval-{split}.json").exists()
    ]
    _run_all(evals, args.parallel, env)


def load_ranks(work: Path, arms, seeds, split: str) -> dict[str, np.ndarray]:
    """Each arm's (seeds, captions) t2v ranks on a split."""
    out = {}
    for arm in arms:
        rows = [
            json.loads((work / f"{arm}-seed{s}" / f"eval-{split}.json").read_text())["t2v_ranks"]
            for s in seeds
        ]
        out[arm] = np.asarray(rows)
    return out


def summarise(work: Path, arms, seeds, replicates: int) -> dict:
    summary: dict = {"seeds": list(seeds), "arms": {}, "differences": {}}
    for split in SPLITS:
        ranks = load_ranks(work, arms, seeds, split)
        for arm in arms:
            summary["arms"].setdefault(arm, {})[split] = {
                f"R@{k}": recall_interval(ranks[arm], k, replicates) for k in (1, 5)
            }
        for a, b in COMPARISONS:
            if a in ranks and b in ranks:
                summary["differences"].setdefault(f"{a} - {b}", {})[split] = {
                    f"R@{k}": paired_difference(ranks[a], ranks[b], k, replicates) for k in (1, 5)
                }
    return summary


def markdown(summary: dict) -> str:
    seeds = len(summary["seeds"])
    lines = [
        f"| arm | split | R@1, mean of {seeds} seeds [95% interval] | per seed "
        "| R@5 [95% interval] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm, splits in summary["arms"].items():
        for split, m in splits.items():
            r1, r5 = m["R@1"], m["R@5"]
            lines.append(
                f"| {arm} | {split} | {r1['mean']:.1f} [{r1['low']:.1f}, {r1['high']:.1f}] | "
                + ", ".join(f"{v:.1f}" for v in r1["per_seed"])
                + f" | {r5['mean']:.1f} [{r5['low']:.1f}, {r5['high']:.1f}] |"
            )
    lines += [
        "",
        "| difference | split | R@1 [95% interval] | R@5 [95% interval] |",
        "| --- | --- | --- | --- |",
    ]
    for name, splits in summary["differences"].items():
        for split, m in splits.items():
            cells = [
                f"{d['difference']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"
                + (" established" if d["established"] else "")
                for d in (m["R@1"], m["R@5"])
            ]
            lines.append(f"| {name} | {split} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "hanet-data" / "synth-2000-seed0")
    parser.add_argument("--work", type=Path, default=ROOT / "hanet-data" / "seed-ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--parallel", type=int, default=1, help="training runs at once")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: torch's)")
    parser.add_argument("--replicates", type=int, default=10_000)
    parser.add_argument(
        "--extra-train-args", default="", help="appended to every arm's recipe, e.g. '--epochs 1'"
    )
    parser.add_argument("--summarise-only", action="store_true", help="only read finished runs")
    args = parser.parse_args()
    if not args.summarise_only:
        if not (args.data / "manifest.json").exists():
            subprocess.run(
                [*HANET, "synth", "--out", str(args.data), "--videos", "2000", "--seed", "0"],
                check=True,
            )
        train_and_evaluate(args)
    summary = summarise(args.work, args.arms, args.seeds, args.replicates)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(markdown(summary))


if __name__ == "__main__":
    main()
