"""Migration 0007 (a video's indexing progress and segment count) up and down on SQLite and
PostgreSQL: the rows are kept both ways, the new columns start empty, SQLite keeps
AUTOINCREMENT (ids never reused) after the downgrade rebuilds the table."""

from __future__ import annotations

from sqlalchemy import inspect, text

import migrations
from db.connect import make_engine


def _insert(conn, sha: str) -> None:
    conn.execute(
        text(
            "INSERT INTO videos (content_sha256, media_path, status, attempts, created_at, "
            "updated_at) VALUES (:h, 'a.mp4', 'indexed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ),
        {"h": sha},
    )


def test_0007_up_and_down_keeps_the_videos(url) -> None:
    migrations.upgrade(url, "0006")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _insert(conn, "a" * 64)
            _insert(conn, "b" * 64)
            conn.execute(text("DELETE FROM videos WHERE content_sha256 = :h"), {"h": "b" * 64})
        migrations.upgrade(url, "0007")
        columns = {c["name"] for c in inspect(engine).get_columns("videos")}
        assert {"indexed_s", "segments"} <= columns
        assert "segments" in {c["name"] for c in inspect(engine).get_columns("rebuild_videos")}
        with engine.begin() as conn:
            row = conn.execute(text("SELECT indexed_s, segments FROM videos")).one()
            assert tuple(row) == (None, None)
            conn.execute(text("UPDATE videos SET indexed_s = 12.5, segments = 4"))
        migrations.downgrade(url, "0006")
        columns = {c["name"] for c in inspect(engine).get_columns("videos")}
        assert not {"indexed_s", "segments"} & columns
        assert "segments" not in {c["name"] for c in inspect(engine).get_columns("rebuild_videos")}
        with engine.begin() as conn:
            assert conn.execute(text("SELECT media_path FROM videos")).scalars().all() == ["a.mp4"]
            _insert(conn, "c" * 64)  # not the deleted newest video's id 2
            ids = conn.execute(text("SELECT id FROM videos ORDER BY id")).scalars().all()
        assert ids == [1, 3]
        migrations.upgrade(url)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
