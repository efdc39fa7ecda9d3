from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil

import anyio
import pytest
import torch


def _import_anyio_up_front() -> None:
    """anyio imports its modules lazily, on whichever thread first needs one (the app's event
    loop serving a file, say). Under pytest every anyio module is assertion-rewritten, that is
    read with ``ast.parse``, and CPython 3.11's ast module is not thread-safe: a lazy import
    racing another thread's parse failed once with "SystemError: AST constructor recursion
    depth mismatch". Importing them here, before any test starts a thread, removes the race."""
    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        if "trio" not in module.name and "pytest" not in module.name:
            with contextlib.suppress(ImportError):
                importlib.import_module(module.name)


_import_anyio_up_front()


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def postgres_url() -> str:
    """URL of a throwaway PostgreSQL database (``.ci/run`` makes one). Skipped without it,
    except where HANET_REQUIRE_POSTGRES is set (CI), where a missing URL is a failure."""
    url = os.environ.get("HANET_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("HANET_REQUIRE_POSTGRES"):
            pytest.fail("HANET_REQUIRE_POSTGRES is set but HANET_TEST_DATABASE_URL is not")
        pytest.skip("HANET_TEST_DATABASE_URL is not set (run .ci/run for the Postgres tests)")
    return url


def require_executable(name: str, install: str) -> str:
    """Path of a Debian tool a test needs. Skipped without it, except where HANET_REQUIRE_TOOLS
    is set (CI installs the tools), where a missing one is a failure."""
    import shutil

    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed ({install})"
        if os.environ.get("HANET_REQUIRE_TOOLS"):
            pytest.fail(f"HANET_REQUIRE_TOOLS is set but {reason}")
        pytest.skip(reason)
    return path
