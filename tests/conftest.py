from __future__ import annotations

import os

import pytest
import torch


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
