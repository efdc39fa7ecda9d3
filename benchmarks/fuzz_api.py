"""Fuzz the HTTP API with Schemathesis against a live `hanet serve`.

Generates a small procedural corpus, indexes it, starts `hanet serve` (with its in-process
indexer, an API key, ingest by path under the corpus; with ``--private`` reads need the key
too) on SQLite or on ``--database-url``, and runs `st run` on its OpenAPI document with every
check (server errors, undeclared status codes and content types, response schemas, accepted
bad input, refused good input, ignored auth, use after free...; benchmarks/schemathesis.toml)
and every phase (examples, coverage, fuzzing, stateful). Seeded, so a run repeats. Exit
status: Schemathesis's (0: no failure). The suite runs a bounded version
(tests/service/test_fuzz.py); the goal's 10-minute runs are

    .venv/bin/python benchmarks/fuzz_api.py --max-time 600
    .venv/bin/python benchmarks/fuzz_api.py --max-time 600 --private --database-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "fuzzing-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hanet(env: dict[str, str], *args: str) -> None:
    subprocess.run([BIN / "hanet", *args], env=env, cwd=ROOT, check=True, capture_output=True)


def prepare(work: Path, videos: int, database_url: str | None, private: bool) -> dict[str, str]:
    """A corpus of ``videos`` generated and indexed under ``work``; the server's environment."""
    from corpus.synth import generate_corpus

    generate_corpus(work / "corpus", videos, seed=3, workers=1, progress=False)
    env = {
        **os.environ,
        "HANET_DATA_DIR": str(work / "data"),
        "HANET_MEDIA_ROOT": str(work / "corpus" / "videos"),
        "HANET_API_KEY": KEY,
        "HANET_MAX_UPLOAD_BYTES": "1000000",
        "HANET_LOG_LEVEL": "WARNING",
    }
    if database_url:
        env["HANET_DATABASE_URL"] = database_url
    if private:
        env["HANET_PROTECT_READS"] = "true"
    hanet(env, "db", "upgrade")
    hanet(env, "index", "add", str(work / "corpus" / "videos"))
    hanet(env, "index", "run")
    return env


def serve(env: dict[str, str], port: int) -> subprocess.Popen:
    """`hanet serve` on ``port``, once it answers /ready."""
    import httpx

    server = subprocess.Popen(
        [BIN / "hanet", "serve", "--port", str(port)], env=env, cwd=ROOT, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not become ready")


def fuzz(port: int, args: argparse.Namespace, report: Path) -> int:
    """`st run` against the server; its exit status."""
    command = [
        str(BIN / "st"),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"http://127.0.0.1:{port}/openapi.json",
        "--seed",
        str(args.seed),
        "--workers",
        "1",
        "--header",
        f"X-API-Key: {KEY}",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--no-color",
    ]
    if args.max_time:
        command += ["--max-time", str(args.max_time)]
    if args.max_examples:
        command += ["--max-examples", str(args.max_examples)]
    started = time.monotonic()
    status = subprocess.run(command, cwd=ROOT).returncode
    print(f"schemathesis exit status {status} after {time.monotonic() - started:.0f} s")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-examples", type=int, default=0, help="per operation; 0: st's")
    parser.add_argument("--max-time", type=int, default=0, help="seconds; 0: no time budget")
    parser.add_argument("--database-url", default=None, help="default: SQLite in the work dir")
    parser.add_argument("--private", action="store_true", help="reads need the key too")
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hanet-fuzz-"))
    env = prepare(work, args.videos, args.database_url, args.private)
    port = free_port()
    server = serve(env, port)
    try:
        status = fuzz(port, args, work / "junit.xml")
    finally:
        server.terminate()
        server.wait(timeout=60)
    if args.work is None and status == 0:
        shutil.rmtree(work, ignore_errors=True)
    elif status:
        print(f"the run's files (server data, junit.xml) are kept in {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
