"""What keeping video files in the database costs (``HANET_MEDIA_STORE=database``): storing a
file of ``--mb`` MiB (as an upload is stored) and making a host's copy of it (as a worker or
another replica does on first use), in MB/s, medians of ``--runs``, on each database given.

    python benchmarks/media_store.py --mb 256 --runs 3 \
        --database-url sqlite:///tmp/m.sqlite3 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/media

Each run stores a new file (fresh random content) and copies it into an empty folder; the
database is migrated first and the stored files deleted afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import migrations
from db import media
from db.connect import make_engine
from db.media import MediaCfg


def _run(engine, folder: Path, mb: int) -> tuple[float, float]:
    path = folder / "in.mp4"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(mb):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            f.write(block)
    sha = digest.hexdigest()
    start = time.perf_counter()
    media.put(engine, path, sha)
    stored = time.perf_counter() - start
    cfg = MediaCfg("database", folder / "copies", cache_bytes=10 * mb * 1024 * 1024)
    start = time.perf_counter()
    copy = media.local_path(engine, media.stored_name(sha, ".mp4"), cfg)
    copied = time.perf_counter() - start
    assert copy.stat().st_size == mb * 1024 * 1024
    copy.unlink()
    media.remove_unused(engine, sha)
    return mb * 1.048576 / stored, mb * 1.048576 / copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", action="append", required=True)
    args = parser.parse_args()
    for url in args.database_url:
        migrations.upgrade(url)
        engine = make_engine(url)
        with tempfile.TemporaryDirectory() as tmp:
            runs = [_run(engine, Path(tmp), args.mb) for _ in range(args.runs)]
        engine.dispose()
        store = statistics.median(r[0] for r in runs)
        copy = statistics.median(r[1] for r in runs)
        print(
            f"{engine.dialect.name:10s} {args.mb} MiB x {args.runs}: store {store:.0f} MB/s, "
            f"copy {copy:.0f} MB/s (medians; runs {[(round(s), round(c)) for s, c in runs]})"
        )


if __name__ == "__main__":
    main()
