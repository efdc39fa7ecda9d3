"""Migration 0008 (webhook outbox, ingest by URL, metadata) up and down on SQLite and
PostgreSQL: the rows are kept both ways, the content hash may be empty only after it (a URL
ingest not yet downloaded, dropped by the downgrade), SQLite keeps AUTOINCREMENT both ways."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

import migrations
from db.connect import make_engine

INSERT = (
    "INSERT INTO videos (content_sha256, media_path, status, attempts, created_at, updated_at) "
    "VALUES (:h, :p, 'indexed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def _ids(conn) -> list[int]:
    return conn.execute(text("SELECT id FROM videos ORDER BY id")).scalars().all()


def test_0008_up_and_down_keeps_the_videos(url) -> None:
    migrations.upgrade(url, "0007")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for h in ("a", "b"):
                conn.execute(text(INSERT), {"h": h * 64, "p": f"{h}.mp4"})
            conn.execute(text("DELETE FROM videos WHERE content_sha256 = :h"), {"h": "b" * 64})
        migrations.upgrade(url, "0008")
        columns = {c["name"] for c in inspect(engine).get_columns("videos")}
        assert {"source_url", "tags", "meta"} <= columns
        assert "webhook_deliveries" in inspect(engine).get_table_names()
        with engine.begin() as conn:
            assert conn.execute(text("SELECT source_url, tags, meta FROM videos")).one() == (
                None,
                None,
                None,
            )
            conn.execute(text(INSERT), {"h": None, "p": ""})  # a URL ingest: no hash yet
            conn.execute(text(INSERT), {"h": None, "p": ""})  # NULLs never clash
            assert _ids(conn) == [1, 3, 4]  # not the deleted newest video's id 2
        migrations.downgrade(url, "0007")
        assert "webhook_deliveries" not in inspect(engine).get_table_names()
        columns = {c["name"] for c in inspect(engine).get_columns("videos")}
        assert not {"source_url", "tags", "meta"} & columns
        with engine.begin() as conn:
            assert conn.execute(text("SELECT media_path FROM videos")).scalars().all() == ["a.mp4"]
            conn.execute(text(INSERT), {"h": "c" * 64, "p": "c.mp4"})
            assert _ids(conn) == [1, 5]  # ids 3 and 4 were given: never again
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(INSERT), {"h": None, "p": ""})
        migrations.upgrade(url)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
