"""Migration 0010 (files in the database, a rebuild's swap mark) up and down on SQLite and
PostgreSQL: a running rebuild is kept both ways, and so is the rule of one running rebuild."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

import migrations
from db.connect import make_engine

REBUILD = (
    "INSERT INTO rebuilds (checkpoint_sha256, factory, state, started_at) "
    "VALUES ('c', 'Flat', 'running', CURRENT_TIMESTAMP)"
)


def test_0010_up_and_down_keeps_the_running_rebuild(url) -> None:
    migrations.upgrade(url, "0009")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(REBUILD))
        migrations.upgrade(url, "0010")
        assert {"media_blobs", "media_chunks"} <= set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            row = conn.execute(text("SELECT state, swap_started_at FROM rebuilds")).one()
            assert tuple(row) == ("running", None)
        migrations.downgrade(url, "0009")
        assert "media_chunks" not in inspect(engine).get_table_names()
        columns = {c["name"] for c in inspect(engine).get_columns("rebuilds")}
        assert "swap_started_at" not in columns and "state" in columns
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(REBUILD))  # still one running rebuild at most
        migrations.upgrade(url)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
