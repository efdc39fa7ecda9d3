"""The OpenAPI document and the app agree: a seeded, bounded Schemathesis run (every check,
every phase, stateful included) against a live `hanet serve`, on SQLite with the reads open
and on PostgreSQL with a private library. benchmarks/fuzz_api.py runs it; its --max-time
runs the long version."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a live server, a small corpus indexed, ~1,000 requests
pytest.importorskip("schemathesis", reason="schemathesis is not installed")

ROOT = Path(__file__).resolve().parents[2]


def _fuzz(work: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "fuzz_api.py", "--work", str(work), *options],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_fuzzer_finds_nothing(database, tmp_path, request) -> None:
    options = ["--seed", "1", "--max-examples", "25"]
    if database == "postgres":
        import migrations

        url = request.getfixturevalue("postgres_url")
        request.addfinalizer(lambda: migrations.downgrade(url, "base"))
        options += ["--database-url", url, "--private"]
    run = _fuzz(tmp_path, *options)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", out).groups())
    assert generated == passed and generated > 300  # every operation fuzzed, all passed
    assert re.search(r"✅ Stateful", out)  # the stateful phase ran and passed
