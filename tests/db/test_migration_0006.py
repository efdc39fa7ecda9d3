"""Migration 0006 (rebuilds and their work lists) up and down on SQLite and PostgreSQL: the
videos' rows are kept both ways, and the database allows one running rebuild only."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

import migrations
from db.connect import make_engine


def _rebuild(conn, state: str) -> None:
    conn.execute(
        text(
            "INSERT INTO rebuilds (checkpoint_sha256, factory, state, started_at) "
            "VALUES (:c, 'Flat', :s, CURRENT_TIMESTAMP)"
        ),
        {"c": "c" * 64, "s": state},
    )


def test_0006_up_and_down_keeps_the_videos(url) -> None:
    migrations.upgrade(url, "0005")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO videos (content_sha256, media_path, status, attempts, "
                    "created_at, updated_at) VALUES (:h, 'a.mp4', 'indexed', 1, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"h": "a" * 64},
            )
        migrations.upgrade(url)
        assert {"rebuilds", "rebuild_videos"} <= set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            _rebuild(conn, "done")
            _rebuild(conn, "done")
            _rebuild(conn, "running")
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _rebuild(conn, "running")
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _rebuild(conn, "paused")
        migrations.downgrade(url, "0005")
        tables = set(inspect(engine).get_table_names())
        assert "rebuilds" not in tables and "rebuild_videos" not in tables
        with engine.connect() as conn:
            assert conn.execute(text("SELECT media_path FROM videos")).scalars().all() == ["a.mp4"]
        migrations.upgrade(url)  # and up again
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
