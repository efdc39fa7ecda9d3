"""Soak test: many simulated people against one `hanet serve` for minutes, then a consistency
check.

Indexes ``--videos`` procedural videos, starts `hanet serve` (its in-process indexer on, an API
key, SQLite or ``--database-url``), then runs Locust headless (benchmarks/soak_users.py:
search, upload, poll, list, delete) with ``--users`` users for ``--minutes``, sampling the
server's resident memory. Prints requests/s, p50/p99 and failures per endpoint, 5xx count,
RSS over time; then, once the queue is drained, checks that every indexed row is in the active
build and every other one is not, that no deleted video is in the database or searchable,
and that every stored upload belongs to a row and every row's file exists.

    .venv/bin/python benchmarks/soak.py --users 64 --minutes 10 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/hanet_soak
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_api import BIN, KEY, ROOT, free_port, hanet, serve  # noqa: E402


def prepare(work: Path, videos: int, pool: int, database_url: str | None) -> dict[str, str]:
    """The library (indexed), the upload pool, the queries; the server's environment."""
    from corpus.synth import generate_corpus

    generate_corpus(work / "library", videos, seed=21, workers=1, progress=False)
    generate_corpus(work / "pool", pool, seed=22, workers=1, progress=False)
    manifest = json.loads((work / "library" / "manifest.json").read_text())
    queries = sorted({c["text"] for v in manifest["videos"] for c in v["captions"]})
    (work / "queries.json").write_text(json.dumps(queries))
    env = {
        **os.environ,
        "HANET_DATA_DIR": str(work / "data"),
        "HANET_API_KEY": KEY,
        "HANET_LOG_LEVEL": "WARNING",
    }
    if database_url:
        env["HANET_DATABASE_URL"] = database_url
    hanet(env, "db", "upgrade")
    hanet(env, "index", "add", str(work / "library" / "videos"))
    hanet(env, "index", "run")
    return env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_rss(pid: int, every_s: float, out: list, stop: threading.Event) -> None:
    start = time.monotonic()
    while not stop.wait(every_s):
        out.append((round(time.monotonic() - start), round(rss_mb(pid), 1)))


def run_locust(work: Path, url: str, users: int, minutes: float) -> Path:
    env = {**os.environ, "SOAK_WORK": str(work), "SOAK_KEY": KEY}
    prefix = work / "locust"
    subprocess.run(
        [
            BIN / "locust",
            "-f",
            str(Path(__file__).with_name("soak_users.py")),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(max(1, users // 8)),
            "--run-time",
            f"{int(minutes * 60)}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
        check=False,  # Locust exits 1 when any request failed: the report says which
    )
    return Path(f"{prefix}_stats.csv")


def report(stats_csv: Path, failures_csv: Path) -> None:
    """Print per-endpoint figures and the failures Locust saw."""
    print(
        f"\n{'endpoint':28} {'requests':>9} {'fails':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for row in csv.DictReader(stats_csv.open()):
        print(
            f"{row['Type'] + ' ' + row['Name']:28} {row['Request Count']:>9} "
            f"{row['Failure Count']:>6} {float(row['Requests/s']):7.1f} "
            f"{row['50%']:>7} {row['99%']:>7}"
        )
    for row in csv.DictReader(failures_csv.open()):
        print(f"failure: {row['Method']} {row['Name']} x{row['Occurrences']}: {row['Error'][:160]}")


def server_errors(url: str) -> int:
    """5xx answers the server counted (its own /metrics: every request, whoever sent it)."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"X-API-Key": KEY}).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("hanet_request_seconds_count") and 'status="5' in line
    )


def _engine():
    from service.runtime import load_settings, open_database

    return open_database(load_settings(), migrate=False)  # the HANET_* of this run


def library_ids() -> list[int]:
    from sqlalchemy import select

    from db.schema import Video

    engine = _engine()
    with engine.connect() as conn:
        ids = conn.scalars(select(Video.id)).all()
    engine.dispose()
    return sorted(ids)


def drain(timeout_s: float = 600) -> dict:
    """Wait until nothing is pending or processing; the queue's counts."""
    from db import queue

    engine = _engine()
    deadline = time.monotonic() + timeout_s
    while True:
        counts = queue.counts(engine)
        if counts["pending"] + counts["processing"] == 0 or time.monotonic() > deadline:
            engine.dispose()
            return counts
        time.sleep(2)


def consistency(work: Path) -> list[str]:
    """What disagrees between the database, the active build and the files (empty: nothing)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from db.schema import Video
    from index.reader import load_current
    from service.runtime import load_settings

    settings = load_settings()
    engine = _engine()
    with Session(engine) as session:
        rows = {v.id: (v.status, Path(v.media_path)) for v in session.scalars(select(Video))}
    engine.dispose()
    live = set(load_current(settings.index_dir).video_ids())
    indexed = {i for i, (status, _) in rows.items() if status == "indexed"}
    log = work / "deleted.txt"
    deleted = {int(x) for x in log.read_text().split()} if log.exists() else set()
    uploads = settings.upload_dir.resolve()
    stored = {p.resolve() for p in uploads.glob("*")}
    files = {path.resolve() for _, path in rows.values()}
    checks = {
        "indexed but not in the build": indexed - live,
        "in the build but not indexed": live - indexed,
        "deleted but still a row": deleted & set(rows),
        "deleted but searchable": deleted & live,
        "orphan files": {str(p) for p in stored if p not in files},
        "rows whose file is gone": {str(p) for p in files if not p.exists()},
    }
    print(
        f"rows {len(rows)}, indexed {len(indexed)}, in the build {len(live)}, "
        f"deleted {len(deleted)}, stored uploads {len(stored)}"
    )
    return [f"{what}: {sorted(found)}" for what, found in checks.items() if found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200, help="indexed before the run")
    parser.add_argument("--pool", type=int, default=2000, help="videos the users may upload")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--database-url", default=None, help="default: SQLite in the work dir")
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hanet-soak-"))
    env = prepare(work, args.videos, args.pool, args.database_url)
    os.environ.update({k: v for k, v in env.items() if k.startswith("HANET_")})
    (work / "initial_ids.json").write_text(json.dumps(library_ids()))
    port = free_port()
    server = serve(env, port)
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(server.pid, 10, samples, stop))
    sampler.start()
    url = f"http://127.0.0.1:{port}"
    try:
        stats = run_locust(work, url, args.users, args.minutes)
        counts = drain()
        errors = server_errors(url)
    finally:
        stop.set()
        sampler.join()
        server.terminate()
        server.wait(timeout=60)
    report(stats, stats.with_name("locust_failures.csv"))
    print(f"server RSS (s, MB): {samples}")
    if len(samples) > 7:
        base, last = samples[6][1], samples[-1][1]  # after the first minute's warm-up
        print(f"RSS after 1 min {base} MB, at the end {last} MB: {100 * (last / base - 1):+.1f}%")
    print(f"5xx answers: {errors}; queue after drain: {counts}")
    problems = consistency(work)
    print("consistency: " + ("OK" if not problems else "; ".join(problems)))
    print(f"work folder: {work}")
    return 1 if problems or errors else 0


if __name__ == "__main__":
    sys.exit(main())
