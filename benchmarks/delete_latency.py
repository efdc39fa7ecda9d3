"""DELETE /videos/{id} latency over HTTP at scale.

Uses the index that ``search_latency.py`` builds (the same ``--work`` and ``--factory``; built
here when absent), on a hard-linked copy of it (index files are never rewritten in place, the
database is copied), so the deletes leave the search benchmark's index as it was. Starts
``hanet serve --api-only`` on the copy, deletes ``--deletes`` videos one at a time and prints
the median and worst wall time, then checks that a deleted video is gone from search.

    .venv/bin/python benchmarks/delete_latency.py --videos 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_latency import ROOT, build_index, pct, start_server, wait_ready  # noqa: E402


def linked_copy(src: Path, dst: Path) -> None:
    """``src`` as hard links, but the SQLite files copied (they change in place)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link)
    for db in src.glob("hanet.sqlite3*"):
        (dst / db.name).unlink()
        shutil.copy2(db, dst / db.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=ROOT / "hanet-data" / "bench-search")
    parser.add_argument("--factory", default="IVF512,Flat")
    parser.add_argument("--deletes", type=int, default=20)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args()
    import httpx

    work = args.work / f"{args.videos}-{args.factory.replace(',', '_')}"
    if not (work / "index" / "CURRENT").exists():
        print(f"building an index of {args.videos} videos in {work} ...")
        work.mkdir(parents=True, exist_ok=True)
        build_index(work, args.videos, args.factory)
    port = args.port or free_port()  # never a stale server left on a fixed port
    copy = work.with_name(work.name + "-delete")
    linked_copy(work, copy)
    env = {**os.environ, "HANET_DATA_DIR": str(copy), "HANET_LOG_LEVEL": "WARNING",
           "HANET_CHECKPOINT": str(copy / "vitb32-random.pt")}  # fmt: skip
    server = start_server(env, port, "--api-only")
    gone = np.random.default_rng(3).choice(np.arange(1, args.videos + 1), args.deletes, False)
    times = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            wait_ready(client, server, "/ready", lambda r: r.status_code == 200)
            for video_id in gone.tolist():
                t0 = time.perf_counter()
                r = client.delete(f"/videos/{video_id}")
                times.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 204:
                    raise SystemExit(f"DELETE answered {r.status_code}: {r.text[:300]}")
            listed = client.get(f"/videos/{int(gone[0])}")
            if listed.status_code != 404:
                raise SystemExit(f"a deleted video still answers {listed.status_code}")
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(copy, ignore_errors=True)
    print(
        f"\n{args.videos} videos, factory {args.factory}, {args.deletes} DELETEs one at a "
        f"time, {os.cpu_count()} CPUs"
    )
    print(
        f"DELETE /videos/{{id}}  p50 {pct(times, 50):.1f} ms   max {max(times):.1f} ms   "
        f"first {times[0]:.1f} ms"
    )


if __name__ == "__main__":
    main()
