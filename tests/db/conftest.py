"""Fixtures of the database tests."""

from __future__ import annotations

import pytest

import migrations


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    """An empty database, SQLite or the throwaway PostgreSQL one (left empty again): for the
    migration tests, which take it up and down themselves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
        yield url
        migrations.downgrade(url, "base")
