"""Recall of the candidate stage against exhaustive HANet scoring, on trained-model embeddings.

The search reranks only the units that ``service.candidates.candidates`` nominates (each level
index's best and the concept scan's, fused by reciprocal rank). Here every caption of a demo
corpus (the bundled demo model over `hanet synth` corpora, ``demo_corpus.py``) is scored
against every unit in float32 with the model's own fused score, and for K in 50, 100, 200, 800:

    recall@K    the share of the exhaustive top 10 units among the K candidates
    top1@K      how often the exhaustive best unit is among them
    overlap@10  the share of the exhaustive top 10 in the served top 10 (the K candidates'
                stored rows reranked with the build's row format), for K = --rerank

for the levels alone and for the levels with the concept scan (``index.concepts``: the units
whose concept probabilities best match the sentence's, by soft Jaccard), as served.

    .venv/bin/python benchmarks/candidate_recall.py CORPUS [CORPUS ...] --cache EMB.pt \\
        --work /work/bench-19/recall --rows int8
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from demo_corpus import DEMO, encode_corpora  # noqa: E402

from index import rows as formats  # noqa: E402
from index.reader import Build  # noqa: E402
from model import TextEmbeddings, VideoEmbeddings  # noqa: E402
from model import scores as scoring  # noqa: E402
from service.candidates import Depth  # noqa: E402

KS = (50, 100, 200, 800)
Chunks = Callable[[], Iterator[tuple[np.ndarray, VideoEmbeddings]]]  # (unit ids, float32 rows)


class TopUnits:
    """The best ``k`` units per sentence by the fused score (float32), over chunks of units
    given one at a time (``add``): ``units`` (Q, k) once every unit has been given."""

    def __init__(self, text: TextEmbeddings, fusion: tuple, scale: float, k: int = 10) -> None:
        self.text, self.fusion, self.scale, self.k = text, fusion, scale, k
        self.scores = np.full((len(text), 0), -np.inf, np.float32)
        self.units = np.zeros((len(text), 0), np.int64)

    def add(self, units: np.ndarray, video: VideoEmbeddings) -> None:
        fused = scoring.similarity(self.text, video, self.fusion, self.scale, chunk=16)["fused"]
        s = np.concatenate([self.scores, fused.numpy()], 1)
        u = np.concatenate([self.units, np.broadcast_to(units, s.shape[:1] + units.shape)], 1)
        order = np.argsort(-s, axis=1, kind="stable")[:, : self.k]
        self.scores, self.units = np.take_along_axis(s, order, 1), np.take_along_axis(u, order, 1)


def exhaustive_top(
    chunks: Chunks, text: TextEmbeddings, fusion: tuple, scale: float, k: int = 10
) -> np.ndarray:
    """(Q, k) the best ``k`` units per sentence by the fused score over every unit (float32)."""
    top = TopUnits(text, fusion, scale, k)
    for units, video in chunks():
        top.add(units, video)
    return top.units


def candidate_sets(
    build: Build,
    text: TextEmbeddings,
    limit: int,
    fusion: tuple,
    concepts: bool = False,
    depth: Depth | None = None,
) -> list[list[int]]:
    """Per sentence, the units ``service.candidates.candidates`` nominates for a top-10 video
    search of ``limit`` candidates, with or without the concept scan, cut as served (by the
    estimated score fused with ``fusion``, the model's weights; ``depth``: the service's
    default)."""
    from service.candidates import candidates

    depth = depth or Depth()
    return [
        candidates(build, text.select([i]), limit, 10, None, concepts, fusion, depth)
        for i in range(len(text))
    ]


def concept_costs(build: Build, text: TextEmbeddings, k: int) -> None:
    """Print what the concept lists cost: making them for the build (wall, CPU, bytes) and
    one sentence's list of ``k`` units (median and p99 over the sentences)."""
    from index import concepts

    wall, cpu = time.perf_counter(), time.process_time()
    concepts.prepare(build)
    made = time.perf_counter() - wall, time.process_time() - cpu
    lists = concepts._parts(build).lists
    size = sum(a.nbytes for part in lists for f in part.values() for a in vars(f).values())
    took = []
    for i in range(len(text)):
        probs = (text.verb_probs[i].float().numpy(), text.noun_probs[i].float().numpy())
        began = time.perf_counter()
        concepts.top_units(build, *probs, k)
        took.append((time.perf_counter() - began) * 1e3)
    print(
        f"  concept lists: made in {made[0]:.1f} s wall / {made[1]:.1f} CPU s, "
        f"{size / 1e6:.0f} MB; a sentence's {k}: median {np.median(took):.1f} ms, "
        f"p99 {np.percentile(took, 99):.1f} ms ({len(took)} sentences)"
    )


def served_top(
    build: Build, text: TextEmbeddings, ids: list[list[int]], fusion: tuple, scale: float
) -> np.ndarray:
    """(Q, 10) the served top 10 units: each sentence's candidates' stored rows, reranked."""
    out = []
    for i, units in enumerate(ids):
        video, grams = build.rerank_rows(units)
        fused = scoring.similarity(text.select([i]), video, fusion, scale, grams=grams)["fused"]
        order = fused[0].argsort(descending=True)[:10].tolist()
        out.append([units[j] for j in order])
    return np.array(out)


def share(found: list[list[int]] | np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean over sentences of the share of ``truth[:, :k]`` in ``found``."""
    return float(
        np.mean([len(set(f) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)])
    )


def report(
    build: Build,
    text: TextEmbeddings,
    truth: np.ndarray,
    fusion: tuple,
    scale: float,
    rerank: int,
    concepts: bool = False,
    depth: Depth | None = None,
) -> dict:
    """Recall@K and top1@K per K, overlap@10 at ``rerank``, printed and returned (the
    candidate stage read ``depth`` deep: ``candidate_sets``)."""
    result = {}
    for label, extra in (("levels", False), ("levels+concepts", True)):
        if extra and not concepts:
            continue
        began = time.process_time()
        for k in KS:
            found = candidate_sets(build, text, k, fusion, extra, depth)
            result[(label, k)] = (share(found, truth), share(found, truth, 1))
            if k == rerank:
                result[(label, "overlap")] = share(
                    served_top(build, text, found, fusion, scale), truth
                )
        cells = "  ".join(
            f"@{k} {result[(label, k)][0]:.3f} ({result[(label, k)][1]:.2f})" for k in KS
        )
        print(
            f"  {label:16s} recall (top1) {cells}   overlap@10 at {rerank}: "
            f"{result[(label, 'overlap')]:.3f}   [{time.process_time() - began:.0f} CPU s]"
        )
    return result


def _publish_corpus(work: Path, video: VideoEmbeddings, factory: str, fmt: str) -> Build:
    """The corpus's videos 1..B published through the index writer (one part)."""
    from index.reader import load_current
    from index.writer import IndexWriter, new_build
    from model import load_checkpoint

    folder = work / "index"
    if not (folder / "CURRENT").exists():
        model = load_checkpoint(DEMO)
        build = new_build(folder, model.cfg, model.checkpoint_sha256, factory, fmt)
        times = np.tile(np.arange(model.cfg.max_frames, dtype=np.float32), (len(video), 1))
        IndexWriter(folder, build).publish(list(range(1, len(video) + 1)), video, times)
    return load_current(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="`hanet synth` folders")
    parser.add_argument("--cache", type=Path, required=True, help="embeddings (demo_corpus.py)")
    parser.add_argument("--work", type=Path, required=True, help="for the index build")
    parser.add_argument("--factory", default="IVF64,Flat")
    parser.add_argument("--rows", default="int8", choices=formats.ROW_FORMATS)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rerank", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)  # no timings here; a shared machine: no waiting thread pool
    from model import load_checkpoint

    cfg = load_checkpoint(DEMO).cfg
    fusion, scale = cfg.fusion, cfg.attention_scale
    corpus = encode_corpora(args.corpora, args.cache)
    work = args.work / f"{len(corpus.captions)}-{args.factory.replace(',', '_')}-{args.rows}"
    build = _publish_corpus(work, corpus.video, args.factory, args.rows)
    rng = np.random.default_rng(0)
    rows = sorted(rng.choice(len(corpus.captions), args.queries, replace=False).tolist())
    text = corpus.text.select(rows)
    units = np.array([build.units(v)[0] for v in range(1, len(corpus.captions) + 1)])
    truth = exhaustive_top(lambda: iter([(units, corpus.video)]), text, fusion, scale)
    print(
        f"{len(units)} videos of the demo corpus (demo model, D {cfg.embed_dim}), factory "
        f"{args.factory}, rows {args.rows}, {len(rows)} captions as queries; recall of the "
        "exhaustive top 10 (float32, fused score)"
    )
    report(build, text, truth, fusion, scale, args.rerank, concepts=True)


if __name__ == "__main__":
    main()
