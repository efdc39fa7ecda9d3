"""Filtered search at 100,000 videos: a filtered candidate search against over-fetching.

Uses (building it once, as benchmarks/search_latency.py does) an index of ``--videos``
one-unit ViT-B-32 videos with seeded random embeddings, and labels the database rows with
tags matching 1 %, 10 % and 50 % of the videos (``p1-<i % 100>``, ``p10-<i % 10>``,
``p50-<i % 2>``), metadata ``{"shard": i % 100}`` and spread ingest dates: the SQLite file
next to the index, and with ``--database-url`` a PostgreSQL database too (rows copied there
once). Then, in-process and one query at a time, it times for each sentence in turn (the order
rotating, so that the machine's load falls on every design alike):

- ``unfiltered``: the search as served;
- ``filtered``: the database's matching videos (``service.filters.matching_videos``) turned
  into the candidate search's IDSelector (what POST /search does with ``filters``);
- ``over-fetch xF``: the unfiltered candidate search F times deeper, the units of videos that
  do not match dropped, the first ``--rerank`` of the rest reranked.

It prints per design the median and p90 wall time, the median CPU time of this process, and
how many searches returned a full ``top_k``.

    .venv/bin/python benchmarks/filter_latency.py
    .venv/bin/python benchmarks/filter_latency.py --factory IVF512,Flat \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/hanet_b
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_latency import build_index, sentences  # noqa: E402

from service.candidates import candidates  # noqa: E402
from service.filters import VideoFilter, matching_videos  # noqa: E402
from service.search import Query, rerank_hits  # noqa: E402
from service.settings import HanetSettings  # noqa: E402

FILTERS = {
    "1%": VideoFilter(tags_all=("p1-7",)),
    "10%": VideoFilter(tags_all=("p10-3",)),
    "50%": VideoFilter(tags_any=("p50-1",)),
    "1% meta": VideoFilter(metadata=(("shard", "42"),)),
}
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def label(engine, videos: int) -> None:
    """Tags, metadata and ingest dates on rows 1..videos (once: skipped when labelled)."""
    from sqlalchemy import bindparam, select, update
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from db.schema import Video

    with engine.begin() as conn:
        first = conn.execute(select(Video.tags).where(Video.id == 1)).scalar()
        count = conn.execute(select(Video.id).order_by(Video.id.desc()).limit(1)).scalar() or 0
        if first is not None and count >= videos:
            return
        began = time.perf_counter()
        for lo in range(1, videos + 1, 5000):
            rows = [_row(i) for i in range(lo, min(videos, lo + 4999) + 1)]
            if count < videos:  # a fresh database (PostgreSQL): the rows themselves
                conn.execute(pg_insert(Video).on_conflict_do_nothing(), rows)
            else:
                table = Video.__table__
                conn.execute(
                    update(table)
                    .where(table.c.id == bindparam("row_id"))
                    .values(tags=bindparam("t"), meta=bindparam("m"), created_at=bindparam("c")),
                    [
                        {"row_id": r["id"], "t": r["tags"], "m": r["meta"], "c": r["created_at"]}
                        for r in rows
                    ],
                )
        print(f"  labelled {videos} rows in {time.perf_counter() - began:.0f} s")


def _row(i: int) -> dict:
    return {
        "id": i,
        "content_sha256": f"{i:064x}",
        "media_path": f"/media/{i}.mp4",
        "title": f"video {i}",
        "status": "indexed",
        "duration_s": 10.0,
        "segments": 1,
        "tags": [f"p1-{i % 100}", f"p10-{i % 10}", f"p50-{i % 2}"],
        "meta": {"shard": str(i % 100)},
        "created_at": EPOCH + timedelta(minutes=i),
        "updated_at": EPOCH + timedelta(minutes=i),
    }


def over_fetch(searcher, build, text, query: Query, allowed: np.ndarray, factor: int) -> list:
    """Search ``factor`` times deeper, drop the units of videos not allowed, rerank the rest."""
    from index.vectors import video_of

    limit = searcher.candidates
    ids = np.asarray(candidates(build, text, limit * factor, query.top_k * factor), np.int64)
    kept = ids[np.isin(video_of(ids), allowed)][:limit]
    return rerank_hits(searcher.model, build, text, sorted(kept.tolist()), query)


@torch.inference_mode()
def measure(searcher, engine, queries: list[str], top_k: int, factors: list[int]) -> dict:
    """Per design: wall ms, CPU ms and hits per query; designs interleaved, order rotating."""
    build = searcher.index.current()
    cache = searcher.cache
    designs: dict[str, object] = {"unfiltered": None}
    for name, where in FILTERS.items():
        designs[f"filtered {name}"] = ("filtered", where)
    for factor in factors:
        designs[f"over-fetch x{factor} 1%"] = ("over", FILTERS["1%"], factor)
    out = {name: {"wall": [], "cpu": [], "hits": [], "db": []} for name in designs}
    names = list(designs)
    for n, sentence in enumerate(queries):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            design = designs[name]
            wall, cpu = time.perf_counter(), time.process_time()
            db = 0.0
            if design is None:
                hits = searcher.search(Query(sentence, top_k))
            else:
                allowed = matching_videos(engine, design[1])
                db = (time.perf_counter() - wall) * 1000
                if design[0] == "filtered":
                    hits = searcher.search(Query(sentence, top_k, videos=allowed))
                else:
                    text = cache.encode_many([sentence])[0]  # cache size 0: encoded each time
                    hits = over_fetch(
                        searcher, build, text, Query(sentence, top_k), allowed, design[2]
                    )
                    assert all(h.video_id in set(allowed.tolist()) for h in hits)
            out[name]["wall"].append((time.perf_counter() - wall) * 1000)
            out[name]["cpu"].append((time.process_time() - cpu) * 1000)
            out[name]["hits"].append(len(hits))
            out[name]["db"].append(db)
    return out


def report(title: str, results: dict, top_k: int) -> None:
    base = float(np.median(results["unfiltered"]["wall"]))
    base_cpu = float(np.median(results["unfiltered"]["cpu"]))
    print(f"\n{title}")
    print(
        f"{'design':22s} {'p50 ms':>8s} {'p90 ms':>8s} {'x unfilt':>8s} {'CPU ms':>8s} "
        f"{'CPU x':>6s} {'DB ms':>7s} {'full top_k':>10s}"
    )
    for name, r in results.items():
        p50, p90 = float(np.median(r["wall"])), float(np.percentile(r["wall"], 90))
        full = sum(h == top_k for h in r["hits"])
        print(
            f"{name:22s} {p50:8.1f} {p90:8.1f} {p50 / base:8.2f} {np.median(r['cpu']):8.1f} "
            f"{np.median(r['cpu']) / base_cpu:6.2f} {np.median(r['db']):7.1f} "
            f"{full:5d}/{len(r['hits'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=ROOT / "hanet-data" / "bench-filter")
    parser.add_argument("--factory", default="Flat")
    parser.add_argument("--rerank", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--over-fetch", type=int, nargs="*", default=[1, 10])
    parser.add_argument("--database-url", help="a PostgreSQL database to measure too")
    parser.add_argument("--threads", type=int, help="torch and FAISS threads (default: all)")
    args = parser.parse_args()
    from db.connect import make_engine
    from service.runtime import build_searcher, load_model, open_database, use_threads

    work = args.work / f"{args.videos}-{args.factory.replace(',', '_')}"
    ckpt = work / "vitb32-random.pt"
    if not (work / "index" / "CURRENT").exists():
        print(f"building an index of {args.videos} videos in {work} ...")
        work.mkdir(parents=True, exist_ok=True)
        build_index(work, args.videos, args.factory)
    use_threads(args.threads)
    settings = HanetSettings(
        data_dir=work,
        checkpoint=ckpt,
        int8_text=True,
        search_candidates=args.rerank,
        query_cache_size=0,
        log_level="WARNING",
    )
    engines = {"SQLite": open_database(settings, migrate=True)}
    if args.database_url:
        import migrations

        migrations.upgrade(args.database_url)
        engines["PostgreSQL"] = make_engine(args.database_url)
    for engine in engines.values():
        label(engine, args.videos)
    model = load_model(settings, serving=True)
    searcher = build_searcher(settings, model)
    build = searcher.index.current(wait=True)
    build.warm()
    queries = sentences(args.queries + 1)
    measure(searcher, engines["SQLite"], queries[:1], args.top_k, args.over_fetch)  # warm-up
    for name, engine in engines.items():
        results = measure(searcher, engine, queries[1:], args.top_k, args.over_fetch)
        report(
            f"{args.videos} videos, {name}, factory {args.factory}, ViT-B-32 (random weights), "
            f"int8 text tower, rerank {args.rerank}, top_k {args.top_k}, {args.queries} "
            f"queries, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            results,
            args.top_k,
        )


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    main()
