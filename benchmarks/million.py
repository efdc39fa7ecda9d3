"""A library of N ViT-B-32-shaped videos made from trained-model embeddings (demo_corpus.py's
lift of the demo model's corpus, with noise), built with bounded memory, then served and
measured: build time, disk per video, server RSS (own and mapped files), HTTP /search p50/p99,
candidate recall@K against exhaustive float32 scoring, and the served top-10's overlap with it.

The build writes the rows a chunk at a time straight into the part's memory-mapped files (in
``--rows``, index.rows) and adds the chunk's level vectors to the FAISS store, one add per
level (the ids the indexer would give them); the database rows and a random-weights
ViT-B-32 checkpoint come from search_latency.py (the HTTP figures time the service; the
recall figures use the demo model's text embeddings, lifted the same way, in-process).

    .venv/bin/python benchmarks/million.py --videos 100000 --factory IVF1024,PQ64 --rows int8 \\
        --corpora /work/bench-19/corpus /work/bench-19/corpus3k --cache /work/bench-19/demo-emb.pt
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from candidate_recall import (  # noqa: E402
    TopUnits,
    candidate_sets,
    concept_costs,
    exhaustive_top,
    report,
)
from demo_corpus import DEMO, Lift, as_video, encode_corpora  # noqa: E402
from search_latency import (  # noqa: E402
    as_environment,
    insert_videos,
    over_http,
    pct,
    print_stages,
    random_checkpoint,
    sentences,
    stages,
)

from index import rows as formats  # noqa: E402
from index.parts import PartWriter  # noqa: E402
from index.reader import FIELDS, load_current  # noqa: E402
from index.vectors import SEGMENT_SLOTS, UNIT_BITS, FaissStore, _stored  # noqa: E402
from index.writer import new_build, publish  # noqa: E402
from model import VideoEmbeddings  # noqa: E402
from service.candidates import Depth  # noqa: E402

CHUNK = 2000  # units made at once (the lift's noise is seeded per chunk: keep it fixed)


class Phases:
    """Wall and CPU seconds spent in each named phase (``with phases("name"):``)."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}
        self._name = ""

    def __call__(self, name: str) -> Phases:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    def __exit__(self, *exc) -> None:
        got = self.spent.setdefault(self._name, [0.0, 0.0])
        got[0] += time.perf_counter() - self._t[0]
        got[1] += time.process_time() - self._t[1]

    def print(self, title: str) -> None:
        cells = ", ".join(f"{k} {w:.0f} s ({c:.0f} CPU s)" for k, (w, c) in self.spent.items())
        print(f"{title}: {cells}; load {os.getloadavg()[0]:.1f}")


def build_library(
    work: Path, n: int, factory: str, fmt: str, lift: Lift, top: TopUnits | None = None
) -> Phases:
    """Checkpoint, database rows and one published build of ``n`` one-unit videos; the time
    spent in each phase. ``top``: each chunk of units is also scored exhaustively (the truth
    of the recall figures) while it is at hand, rather than made again afterwards."""
    phases = Phases()
    with phases("checkpoint and database"):
        _, model = random_checkpoint(work)
        insert_videos(work, n, 1, model.checkpoint_sha256)
    build = new_build(work / "index", model.cfg, model.checkpoint_sha256, factory, fmt)
    folder = build.root / "parts" / "000000"
    folder.mkdir(parents=True)
    part: PartWriter | None = None
    began = time.perf_counter()
    for lo in range(0, n, CHUNK):
        count = min(CHUNK, n - lo)
        with phases("generate"):
            made = lift.units(lo, count)
        if top is not None:
            with phases("exhaustive truth"):
                top.add(np.arange(lo + 1, lo + count + 1) << UNIT_BITS, as_video(made))
        with phases("rows and grams"):
            coded = {k: v for f in FIELDS for k, v in formats.encode(f, made[f], fmt).items()}
            part = part or PartWriter(folder, n, coded)
            part.put(lo, coded)
        add_levels(build.vectors, lo + 1, made, phases)
        rate = (lo + count) / (time.perf_counter() - began)
        print(f"\r  built {lo + count}/{n} videos ({rate:.0f}/s)", end="", flush=True)
    print()
    with phases("flush and publish"):
        t = model.cfg.max_frames
        times = (np.arange(t, dtype=np.float32) + 0.5) * (10.0 / t)
        units = np.arange(1, n + 1, dtype=np.int64) << UNIT_BITS
        spans = np.tile(np.array([[0.0, 10.0]], np.float32), (n, 1))
        part.close(np.tile(times, (n, 1)), spans, units)
        build.manifest["parts"] = ["000000"]
        empty = VideoEmbeddings(**{f: torch.zeros(0) for f in FIELDS})
        nothing = np.zeros(0, np.int64)
        publish(
            work / "index",
            build,
            nothing,
            empty,
            np.zeros((0, t), np.float32),
            np.zeros((0, 2)),
            add_vectors=False,
        )
    return phases


LEVEL_FIELDS = {"event": "global_", "action": "action_segments", "entity": "entity_segments"}


def add_levels(store: FaissStore, first: int, made: dict[str, np.ndarray], phases: Phases) -> None:
    """The level vectors of one-unit videos ``first``, ``first + 1``, ... (``made``: a chunk
    of units), one FAISS add per level with the ids ``FaissStore.add`` gives each video, not
    one call per video and level (which, for IVF,PQ levels, took most of a build's time). A
    level still staged (exact, until it holds enough vectors to train) moves to its real index
    in the chunk that fills it, trained on its first ``store.train_size`` vectors: what
    ``FaissStore.add`` trains on when videos are added one at a time (a whole chunk's worth
    more would lengthen the training, not change what it is)."""
    count = len(made["global_"])
    videos = np.arange(first, first + count, dtype=np.int64)
    units = videos << UNIT_BITS  # index.vectors.unit_id(video, 0)
    for level, field in LEVEL_FIELDS.items():
        x = np.asarray(made[field], np.float32).reshape(-1, store.dim)
        per = x.shape[0] // count
        ids = (units[:, None] * SEGMENT_SLOTS + np.arange(per)).reshape(-1)
        index = store.indexes[level]
        if level in store.staged and index.ntotal + len(x) >= store.train_size:
            with phases("level training"):
                held, vectors = _stored(index)
                ids, x = np.concatenate([held, ids]), np.concatenate([vectors, x])
                index = store._new_index()  # PQ: without polysemous training, as the store trains
                index.train(x[: store.train_size])
                store.indexes[level] = index
                store.staged.discard(level)
        with phases("level adds"):
            index.add_with_ids(x, ids)
    store.videos.update(videos.tolist())


def chunks(lift: Lift, n: int):
    """The library's units in float32, as built (the same chunks: the same noise)."""
    for lo in range(0, n, CHUNK):
        count = min(CHUNK, n - lo)
        made = lift.units(lo, count)
        units = np.arange(lo + 1, lo + count + 1, dtype=np.int64) << UNIT_BITS  # unit_id(v, 0)
        yield units, as_video(made)


def disk_bytes(folder: Path) -> int:
    out = subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--factory", default="IVF1024,PQ64")
    parser.add_argument("--rows", default="int8", choices=formats.ROW_FORMATS)
    parser.add_argument("--corpora", type=Path, nargs="+", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-19/million"))
    parser.add_argument("--queries", type=int, default=300, help="HTTP searches")
    parser.add_argument("--quality-queries", type=int, default=100)
    parser.add_argument("--rerank", type=int, default=200)
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-recall", action="store_true", help="skip the recall figures")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="after the HTTP run, time the search's stages in-process (the same queries)",
    )
    parser.add_argument(
        "--concepts",
        action="store_true",
        help="also report the levels with the concept scan (index.concepts) fused in",
    )
    parser.add_argument(
        "--nprobe",
        type=int,
        help="IVF lists the recall figures search (in-process; default the build's, 16; "
        "the HTTP figures always use the service's)",
    )
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="serve and measure recall without reading the rerank rows in at load (cold)",
    )
    parser.add_argument(
        "--depth",
        nargs="+",
        default=["2:5"],
        metavar="LISTS:EXACT",
        help="the candidate stage's depths (HANET_SEARCH_LIST_DEPTH, HANET_SEARCH_EXACT): the "
        "recall figures for each; HTTP with the first",
    )
    parser.add_argument(
        "--summaries",
        type=float,
        default=0.0,
        help="with --no-warm, the share of the available memory up to which the summaries are "
        "read in all the same (HANET_SUMMARIES_IN_MEMORY)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and FAISS threads of the build and recall"
    )
    parser.add_argument(
        "--search-concepts",
        choices=("on", "off"),
        default="on",
        help="the served search's concept list (HANET_SEARCH_CONCEPTS) in the HTTP figures",
    )
    args = parser.parse_args()
    depths = [Depth(*map(int, d.split(":"))) for d in args.depth]
    torch.set_num_threads(args.threads)  # a shared machine: one, no waiting thread pool
    faiss.omp_set_num_threads(args.threads)  # idem: OpenMP threads on a busy machine spin-wait
    from model import load_checkpoint

    demo = load_checkpoint(DEMO).cfg
    lift = Lift(encode_corpora(args.corpora, args.cache))
    work = args.work / f"{args.videos}-{args.factory.replace(',', '_')}-{args.rows}"
    rng = np.random.default_rng(0)
    picked = rng.choice(len(lift.corpus.captions), args.quality_queries, replace=False)
    text = lift.texts(sorted(picked.tolist()))
    saved = work / f"exhaustive-top10-{args.quality_queries}.npy"  # the same sentences
    if not (work / "index" / "CURRENT").exists():
        work.mkdir(parents=True, exist_ok=True)
        skip = saved.exists() or args.no_recall  # truth made with the build, when wanted
        top = None if skip else TopUnits(text, demo.fusion, demo.attention_scale)
        wall, cpu = time.perf_counter(), time.process_time()
        phases = build_library(work, args.videos, args.factory, args.rows, lift, top)
        truth_wall, truth_cpu = phases.spent.pop("exhaustive truth", (0.0, 0.0))
        print(
            f"built {args.videos} videos in {time.perf_counter() - wall - truth_wall:.0f} s "
            f"wall, {time.process_time() - cpu - truth_cpu:.0f} CPU s, peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        phases.print("  by phase")
        if top is not None:
            np.save(saved, top.units)
            print(
                f"exhaustive float32 scoring of {args.videos} videos x {len(text)} sentences, "
                f"during the build (not counted above): {truth_cpu:.0f} CPU s, "
                f"{truth_wall:.0f} s wall"
            )
    disk = disk_bytes(work / "index")
    print(f"{work}: index {disk / 1e9:.2f} GB, {disk / args.videos / 1e3:.1f} KB per video")
    if not args.no_http:
        from service.settings import HanetSettings

        settings = HanetSettings(
            data_dir=work,
            checkpoint=work / "vitb32-random.pt",
            int8_text=True,
            search_candidates=args.rerank,
            search_concepts=args.search_concepts == "on",
            search_list_depth=depths[0].lists,
            search_exact=depths[0].exact,
            summaries_in_memory=args.summaries,
            log_level="WARNING",
            query_cache_size=0,
        )
        env = {**os.environ, **as_environment(settings)}
        began = time.perf_counter()
        queries = sentences(args.queries)
        http = over_http(
            env, args.port, queries, 20, warm=not args.no_warm, index_dir=work / "index"
        )
        print(
            f"  HTTP run {time.perf_counter() - began:.0f} s wall "
            f"({'rows not warmed' if args.no_warm else 'rows warmed'} at load, "
            f"concept list {args.search_concepts})"
        )
        for name, got in http["clients"].items():
            print(
                f"HTTP /search, {name:11s} p50 {pct(got['wall'], 50):6.1f} ms  p99 "
                f"{pct(got['wall'], 99):6.1f} ms"
            )
        for when, key in (
            ("once ready", "ready_rss_mb"),
            (f"after {len(queries) + 20} x 2 searches", "rss_mb"),
        ):
            rss = http[key]
            print(
                f"server RSS {when}: {rss['VmRSS']:.0f} MB (own {rss['RssAnon']:.0f} MB, "
                f"mapped files {rss['RssFile']:.0f} MB, of them the index's {rss['under']:.0f} "
                f"MB), load {os.getloadavg()[0]:.1f}"
            )
        if args.stages:
            print_stages(stages(settings, queries, warm=not args.no_warm))
    if args.no_recall:
        return
    build = load_current(work / "index")
    # as a server: in when they fit, or cold (their summaries in memory with --summaries)
    build.warm(share=0.0 if args.no_warm else None, summaries=args.summaries)
    if saved.exists():
        truth = np.load(saved)
        print(f"exhaustive float32 top 10 of {len(text)} sentences read from {saved}")
    else:
        began, wall = time.process_time(), time.perf_counter()
        truth = exhaustive_top(
            lambda: chunks(lift, args.videos), text, demo.fusion, demo.attention_scale
        )
        np.save(saved, truth)
        print(
            f"exhaustive float32 scoring of {args.videos} videos x {len(text)} sentences: "
            f"{time.process_time() - began:.0f} CPU s, {time.perf_counter() - wall:.0f} s "
            f"wall, load {os.getloadavg()[0]:.1f}"
        )
    if args.nprobe:
        build.vectors.nprobe = args.nprobe
    print(f"candidates from the levels at nprobe {build.vectors.nprobe}:")
    if args.concepts:
        concept_costs(build, text, args.rerank)
    bases = len(lift.corpus.captions)
    for depth in depths:
        print(f"the lists {depth.lists} times deeper, exact scores for {depth.exact or 'all'}:")
        report(
            build, text, truth, demo.fusion, demo.attention_scale, args.rerank, args.concepts, depth
        )
        base_recall(build, text, truth, demo.fusion, args.rerank, bases, args.concepts, depth)


def base_recall(
    build, text, truth: np.ndarray, fusion: tuple, k: int, bases: int, concepts: bool, depth
) -> None:
    """Print the share of the exhaustive top 10's distinct base videos (unit i is a copy of
    base video i % bases) with at least one copy among the ``k`` candidates: whether the
    candidate stage finds the right content, whichever noisy copy of it."""

    def of(units) -> set[int]:
        return set((((np.asarray(units, np.int64) >> UNIT_BITS) - 1) % bases).tolist())

    want = [of(t[:10]) for t in truth]
    for label, extra in (("levels", False), ("levels+concepts", True)):
        if extra and not concepts:
            continue
        found = candidate_sets(build, text, k, fusion, extra, depth)
        share = np.mean([len(w & of(f)) / len(w) for w, f in zip(want, found, strict=True)])
        print(f"  {label:16s} base videos of the exhaustive top 10 among {k}: {share:.3f}")


if __name__ == "__main__":
    main()
