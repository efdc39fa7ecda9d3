"""Which package may import which, and no import cycles between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "db", "index", "corpus", "indexer", "service", "migrations")
# What each package may import of the others (the arrows of docs/architecture.md).
ALLOWED = {
    "model": set(),
    "db": set(),
    "index": {"model"},
    "corpus": {"model", "indexer"},  # indexer.decode reads the training videos
    "indexer": {"model", "db", "index"},
    "service": {"model", "db", "index", "corpus", "indexer", "migrations"},
    "migrations": {"db"},
}
# Third-party packages a layer must not need.
FORBIDDEN = {
    "model": {"faiss", "sqlalchemy", "fastapi", "alembic"},
    "db": {"torch", "faiss", "fastapi"},
    "index": {"sqlalchemy", "fastapi", "alembic"},
    "indexer": {"fastapi"},
}


def _imports(path: Path) -> set[str]:
    """Dotted names of the modules ``path`` imports (anywhere in it, lazy imports included),
    with ``from pkg import name`` also giving ``pkg.name``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    bad = {}
    for path in (ROOT / package).rglob("*.py"):
        tops = {name.split(".")[0] for name in _imports(path)}
        wrong = (tops & set(PACKAGES)) - ALLOWED[package] - {package}
        wrong |= tops & FORBIDDEN.get(package, set())
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"{package}/ may import only {sorted(ALLOWED[package])}: {bad}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        done.add(node)
        for dep in sorted(graph[node]):
            visit(dep, path + [node])

    for node in sorted(graph):
        visit(node, [])
    return cycles


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = {d for d in _imports(path) if d in modules and d != name}
        # `from pkg import submodule` depends on the submodule, not on the package's __init__
        graph[name] = {d for d in deps if not any(e.startswith(d + ".") for e in deps)}
    return graph


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
