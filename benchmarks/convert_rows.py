"""A copy of a benchmark's work folder (search_latency.py, million.py) with its rerank rows in
another row format (index.rows), or in the same one written as new parts are (records: from a
work folder made before them), chunk by chunk (bounded memory): the same FAISS files (hard
links), database (copied) and checkpoint, so a before/after pair differs in the rows alone.

    .venv/bin/python benchmarks/convert_rows.py SRC_WORK DST_WORK --rows int8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index import rows  # noqa: E402
from index.parts import PartWriter  # noqa: E402
from index.reader import FIELDS, current_name, load_part  # noqa: E402


def convert_part(src: Path, dst: Path, fmt: str, chunk: int = 4096) -> None:
    """One part's files in ``fmt``, written as new parts are (``index.parts.PartWriter``:
    records): rows coded again a chunk at a time (from either layout), Gram matrices of the
    decoded rows, the other files hard-linked."""
    dst.mkdir(parents=True)
    arrays, _ = load_part(src)
    n = len(arrays["global_"])
    part = None
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        coded = {}
        for f in FIELDS:
            s = arrays.get(f + rows.SCALE)
            got = rows.decode(f, np.array(arrays[f][lo:hi]), None if s is None else s[lo:hi])
            coded.update(rows.encode(f, got.numpy(), fmt))
        part = part or PartWriter(dst, n, coded)
        part.put(lo, coded)
    part.flush()
    for name in ("frame_times", "spans", "unit_ids"):
        os.link(src / f"{name}.npy", dst / f"{name}.npy")


def convert_work(src: Path, dst: Path, fmt: str) -> None:
    name = current_name(src / "index")
    if name is None:
        raise SystemExit(f"nothing published in {src / 'index'}")
    old, new = src / "index" / "builds" / name, dst / "index" / "builds" / name
    (new / "vectors").mkdir(parents=True)
    for f in (old / "vectors").iterdir():
        os.link(f, new / "vectors" / f.name)
    manifest = json.loads((old / "manifest.json").read_text())
    for part in manifest["parts"]:
        convert_part(old / "parts" / part, new / "parts" / part, fmt)
    manifest["rows"] = fmt
    (new / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (dst / "index" / "CURRENT").write_text(name + "\n")
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--rows", default="int8", choices=rows.ROW_FORMATS)
    args = parser.parse_args()
    convert_work(args.src, args.dst, args.rows)
    print(f"{args.dst}: rows {args.rows}")


if __name__ == "__main__":
    main()
