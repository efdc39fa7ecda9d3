"""/search latency while videos are being indexed, against the same searches once idle.

Layouts of one machine: `hanet serve` with its in-process indexer worker (the default),
`hanet serve --api-only` beside a separate `hanet index run` process (the compose layout), and
the same with the worker's OpenMP threads passive (``OMP_WAIT_POLICY=PASSIVE``). Each
starts on a fresh data directory with a random-weights checkpoint (ViT-B-32 by default), ingests
one video and waits for it (so that searches have an index), then queues ``--videos`` more
procedural videos by path and searches from one client until they are all indexed, then
searches as many times again with nothing to index. The query cache is off, so that every
search encodes its sentence.

    .venv/bin/python benchmarks/search_while_indexing.py --videos 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.search_latency import (  # noqa: E402
    HANET_CLI,
    pct,
    sentences,
    start_server,
    wait_ready,
)


def _wait_indexed(client, ids: list[int], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    for video_id in ids:
        while not _done(client, video_id):
            if time.monotonic() > deadline:
                raise SystemExit("indexing did not finish in time")
            time.sleep(0.5)


def _done(client, video_id: int) -> bool:
    return client.get(f"/videos/{video_id}").json()["status"] in ("indexed", "failed")


def run(layout: str, arch: str, corpus: Path, videos: int, work: Path, port: int) -> dict:
    import httpx

    from model import create_model

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    checkpoint = work / f"{arch}-random.pt"
    create_model(arch).save(str(checkpoint))
    env = {
        **os.environ,
        "HANET_DATA_DIR": str(work / "data"),
        "HANET_CHECKPOINT": str(checkpoint),
        "HANET_MEDIA_ROOT": str(corpus),
        "HANET_INT8_TEXT": "true",
        "HANET_LOG_LEVEL": "WARNING",
        "HANET_QUERY_CACHE_SIZE": "0",
    }
    separate = layout.startswith("separate")
    # "separate-passive": the worker's OpenMP threads sleep at once instead of spinning
    worker_env = {**env, "OMP_WAIT_POLICY": "PASSIVE"} if layout == "separate-passive" else env
    server = start_server(env, port, *(["--api-only"] if separate else []))
    worker = None
    files = sorted(p.name for p in corpus.glob("*.mp4"))[: videos + 1]
    queries = sentences(2000)
    busy, idle = [], []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            wait_ready(client, server, "/health", lambda r: r.status_code == 200)

            def index_queue() -> subprocess.Popen | None:
                if not separate:
                    return None
                quiet = subprocess.DEVNULL
                return subprocess.Popen(
                    [*HANET_CLI, "index", "run"],
                    env=worker_env,
                    cwd=ROOT,
                    stdout=quiet,
                    stderr=quiet,
                )

            first = client.post("/videos", json={"path": files[0]}).json()["id"]
            worker = index_queue()
            _wait_indexed(client, [first])
            if worker is not None:
                worker.wait()
            ids = [client.post("/videos", json={"path": f}).json()["id"] for f in files[1:]]
            began = time.perf_counter()
            worker = index_queue()
            i = 0
            while i % 5 or not _done(client, ids[-1]):  # the queue is taken oldest first
                t0 = time.perf_counter()
                client.post("/search", json={"query": queries[i % len(queries)], "top_k": 10})
                busy.append((time.perf_counter() - t0) * 1000)
                i += 1
            indexing_s = time.perf_counter() - began
            _wait_indexed(client, ids)
            for j in range(max(len(busy), 50)):
                t0 = time.perf_counter()
                client.post("/search", json={"query": queries[j % len(queries)], "top_k": 10})
                idle.append((time.perf_counter() - t0) * 1000)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
        server.terminate()
        server.wait(timeout=60)
    return {"busy": busy, "idle": idle, "indexing_s": indexing_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--corpus", type=Path, default=ROOT / "hanet-data" / "synth-2000-seed0")
    parser.add_argument("--work", type=Path, default=ROOT / "hanet-data" / "bench-indexing")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--layouts", nargs="+", default=["in-process", "separate", "separate-passive"]
    )
    args = parser.parse_args()
    corpus = args.corpus / "videos"
    if not corpus.is_dir():
        raise SystemExit(
            f"no videos in {corpus}: run `hanet synth --out {args.corpus} "
            "--videos 2000 --seed 0` first (or pass --corpus)"
        )
    print(
        f"{args.arch} (random weights, int8 text), {args.videos} videos indexed while one client "
        f"searches, {os.cpu_count()} CPUs"
    )
    for layout in args.layouts:
        r = run(layout, args.arch, corpus, args.videos, args.work / layout, args.port)
        busy, idle = r["busy"], r["idle"]
        print(
            f"{layout:16s} while indexing ({len(busy)} searches, {r['indexing_s']:.0f} s, "
            f"{args.videos / r['indexing_s']:.2f} videos/s): p50 {pct(busy, 50):6.1f} ms  "
            f"p99 {pct(busy, 99):6.1f} ms | idle ({len(idle)}): p50 {pct(idle, 50):6.1f} ms  "
            f"p99 {pct(idle, 99):6.1f} ms"
        )


if __name__ == "__main__":
    main()
