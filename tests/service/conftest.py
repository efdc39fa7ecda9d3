"""Fixtures shared by the service tests."""

from __future__ import annotations

import pytest

import migrations


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request) -> str | None:
    """None (each test's own SQLite file) or the test PostgreSQL database, migrated down again
    afterwards so the next test starts from an empty one."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    yield url
    if url:
        migrations.downgrade(url, "base")
