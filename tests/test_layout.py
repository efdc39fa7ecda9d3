"""Project structure rules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_imports_nothing_from_service_or_indexer() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_modules(path) & {"service", "indexer"})
        for path in (ROOT / "model").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"model/ must stay independent of service/ and indexer/: {offenders}"


def test_layering_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from service.settings import HanetSettings\nimport indexer.writer\n")
    assert _imported_modules(bad) >= {"service", "indexer"}


def test_model_needs_no_faiss_or_sql() -> None:
    used = set().union(*(_imported_modules(p) for p in (ROOT / "model").rglob("*.py")))
    assert not used & {"faiss", "sqlalchemy", "fastapi", "alembic"}


def test_logging_configured_only_in_entry_points() -> None:
    allowed = {ROOT / "service" / "cli" / "__init__.py"}
    for package in ("model", "service", "indexer"):
        for path in (ROOT / package).rglob("*.py"):
            if path not in allowed:
                assert "basicConfig" not in path.read_text(), f"{path} configures logging"
