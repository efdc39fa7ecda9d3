"""Milvus Lite against in-process FAISS Flat on the same units: search latency and top-10
agreement, through the stores the service uses (``index.milvus.MilvusStore``,
``index.vectors.FaissStore``), plus the rerank payload read a Milvus search adds.

    python benchmarks/milvus_vs_faiss.py --units 100000 --dim 512 --queries 200

Seeded random unit vectors (one event vector per unit; ``--action`` adds the action level's
key segments, as many per unit as the config's). Both stores are exact (FAISS Flat, Milvus
FLAT), so their top 10 should agree but for float ties. Latency: one query at a time, the
service's candidate search (``top_units``, top ``--candidates`` units) and a top-10 search; p50
and p90 of ``--queries`` queries after a warm-up. ``--payloads``: the other cost of a Milvus
search, reading the candidates' rerank payloads (``payload_cost``). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from index.milvus import MilvusStore, MilvusTarget
from index.vectors import FaissStore


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(stores: list, units: int, dim: int, action: int, seed: int) -> dict[str, float]:
    """The same videos (one unit each) into every store; seconds spent per store."""
    rng = np.random.default_rng(seed)
    spent = [0.0] * len(stores)
    batch = 5000
    for start in range(0, units, batch):
        n = min(batch, units - start)
        event = _unit(rng, n, dim)
        acts = _unit(rng, n * action, dim).reshape(n, action, dim) if action else None
        videos = {
            start + i + 1: [{"event": event[i : i + 1], **({"action": acts[i]} if action else {})}]
            for i in range(n)
        }
        for s, store in enumerate(stores):
            began = time.perf_counter()
            if isinstance(store, MilvusStore):
                store.add_many(videos)
            else:
                for video_id, vecs in videos.items():
                    store.add(video_id, vecs)
            spent[s] += time.perf_counter() - began
    for s, store in enumerate(stores):
        if isinstance(store, MilvusStore):  # as the writer does after each publish
            began = time.perf_counter()
            store.flush()
            spent[s] += time.perf_counter() - began
    return {type(s).__name__: round(t, 1) for s, t in zip(stores, spent, strict=True)}


def _timed(store, level: str, queries: np.ndarray, k: int) -> tuple[list[np.ndarray], list[float]]:
    ids, ms = [], []
    for q in queries:
        began = time.perf_counter()
        row = store.top_units(level, q[None], k)[0]
        ms.append((time.perf_counter() - began) * 1000)
        ids.append(row[0])
    return ids, ms


def _stats(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=10)
    return {"p50_ms": round(statistics.median(ms), 2), "p90_ms": round(q[8], 2)}


def run(args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="milvus-bench-"))
    try:
        faiss_store = FaissStore(args.dim, "Flat")
        target = MilvusTarget(str(folder / "bench.db"), prefix="bench")
        milvus_store = MilvusStore(target, "b1", args.dim, "Flat")
        fill_s = _fill([faiss_store, milvus_store], args.units, args.dim, args.action, args.seed)
        queries = _unit(np.random.default_rng(args.seed + 1), args.queries + args.warmup, args.dim)
        out: dict = {"units": args.units, "dim": args.dim, "insert_s": fill_s, "levels": {}}
        for level in ("event", "action") if args.action else ("event",):
            result = {}
            for k in (10, args.candidates):
                for store in (faiss_store, milvus_store):
                    _timed(store, level, queries[: args.warmup], k)
                f_ids, f_ms = _timed(faiss_store, level, queries[args.warmup :], k)
                m_ids, m_ms = _timed(milvus_store, level, queries[args.warmup :], k)
                overlap = [
                    len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10
                    for a, b in zip(f_ids, m_ids, strict=True)
                ]
                result[f"top{k}"] = {
                    "faiss_flat": _stats(f_ms),
                    "milvus_lite_flat": _stats(m_ms),
                    "top10_overlap_mean": round(float(np.mean(overlap)), 4),
                    "top10_overlap_min": float(np.min(overlap)),
                }
            out["levels"][level] = result
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _embeddings(cfg, n: int, seed: int):
    """``n`` units of random embeddings in ``cfg``'s shapes (what a rerank reads)."""
    import torch

    from model import VideoEmbeddings

    g = torch.Generator().manual_seed(seed)
    t, d, sa, se = cfg.max_frames, cfg.embed_dim, cfg.num_action_segments, cfg.num_entity_segments
    first = torch.randint(0, t - cfg.action_window + 1, (n, sa), generator=g)
    return VideoEmbeddings(
        global_=torch.randn(n, d, generator=g),
        action_frames=torch.randn(n, t, d, generator=g),
        entity_frames=torch.randn(n, t, d, generator=g),
        frame_mask=torch.ones(n, t, dtype=torch.bool),
        action_segments=torch.randn(n, sa, d, generator=g),
        action_spans=torch.stack([first, first + cfg.action_window - 1], dim=-1),
        entity_segments=torch.randn(n, se, d, generator=g),
        verb_probs=torch.rand(n, cfg.num_verbs, generator=g),
        noun_probs=torch.rand(n, cfg.num_nouns, generator=g),
    )


def payload_cost(args: argparse.Namespace) -> dict:
    """The rerank rows of ``--rerank`` random candidates: from FAISS builds' memory-mapped
    parts (warm) against Milvus payloads (``known`` + ``rerank_rows``, an empty cache: a
    search whose candidates were not read before)."""
    from index.milvus_build import MilvusBuild
    from index.milvus_index import MilvusWriter
    from index.reader import load_current
    from index.writer import IndexWriter
    from model import get_config

    cfg = get_config(args.config)
    folder = Path(tempfile.mkdtemp(prefix="milvus-rows-"))
    try:
        faiss_w = IndexWriter.open(folder / "index", cfg, "e" * 64, "Flat")
        target = MilvusTarget(str(folder / "rows.db"), prefix="rows")
        milvus_w = MilvusWriter.open(target, cfg, "e" * 64, "Flat")
        for start in range(0, args.payload_units, 500):
            n = min(500, args.payload_units - start)
            ids = list(range(start + 1, start + n + 1))
            video = _embeddings(cfg, n, start)
            frames = np.tile(np.arange(cfg.max_frames, dtype=np.float32) * 0.25, (n, 1))
            for writer in (faiss_w, milvus_w):
                writer.publish(ids, video, frames)
        build = load_current(folder / "index")
        build.warm()
        rng = np.random.default_rng(args.seed)
        f_ms, m_ms = [], []
        for _ in range(args.payload_queries):
            units = sorted(rng.choice(args.payload_units, args.rerank, replace=False) + 1)
            units = [u << 20 for u in units]  # unit 0 of each video
            began = time.perf_counter()
            build.known(np.array(units))
            build.rerank_rows(units)
            f_ms.append((time.perf_counter() - began) * 1000)
            fresh = MilvusBuild(milvus_w.build.manifest, milvus_w.build.vectors)
            began = time.perf_counter()
            fresh.known(np.array(units))
            fresh.rerank_rows(units)
            m_ms.append((time.perf_counter() - began) * 1000)
        return {
            "config": args.config,
            "units": args.payload_units,
            "candidates": args.rerank,
            "faiss_build_mmap": _stats(f_ms),
            "milvus_lite_payloads": _stats(m_ms),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--action", type=int, default=0, help="action vectors per unit (0: none)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=800, help="the service's ANN depth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--payloads", action="store_true", help="the rerank rows' cost instead")
    parser.add_argument("--config", default="ViT-B-32", help="shapes of the payloads")
    parser.add_argument("--payload-units", type=int, default=2000)
    parser.add_argument("--payload-queries", type=int, default=20)
    parser.add_argument("--rerank", type=int, default=200, help="candidates reranked per search")
    args = parser.parse_args()
    print(json.dumps(payload_cost(args) if args.payloads else run(args), indent=1))


if __name__ == "__main__":
    main()
