"""Migration 0009 (video labels) up and down on SQLite and PostgreSQL: the labels of rows already
there are filled in, and the triggers keep them equal to the JSON columns on every insert,
update and delete, whoever writes the row."""

from __future__ import annotations

from sqlalchemy import inspect, text

import migrations
from db.connect import make_engine

INSERT = (
    "INSERT INTO videos (content_sha256, media_path, status, attempts, created_at, updated_at, "
    "tags, meta) VALUES (:h, 'v.mp4', 'indexed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
    ":tags, :meta)"
)
LONG = "é" * 300  # 600 bytes: over the label size limit


def _labels(conn) -> set[tuple[str, str, int]]:
    rows = conn.execute(text("SELECT key, value, video_id FROM video_labels"))
    return {tuple(r) for r in rows}


def test_0009_labels_follow_the_json_columns(url) -> None:
    migrations.upgrade(url, "0008")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(INSERT), {"h": "a" * 64, "tags": '["x", "y"]', "meta": '{"k": "1"}'})
            conn.execute(text(INSERT), {"h": "b" * 64, "tags": None, "meta": None})
        migrations.upgrade(url, "0009")
        with engine.begin() as conn:
            assert _labels(conn) == {("", "x", 1), ("", "y", 1), ("k", "1", 1)}  # filled in
            conn.execute(text(INSERT), {"h": "c" * 64, "tags": '["x"]', "meta": "null"})
            conn.execute(
                text("UPDATE videos SET tags = :t, meta = :m WHERE id = 2"),
                {"t": '["z", "z"]', "m": f'{{"k": "2", "long": "{LONG}"}}'},
            )
            conn.execute(text("UPDATE videos SET tags = '[]' WHERE id = 1"))
            conn.execute(text("UPDATE videos SET status = 'failed' WHERE id = 3"))  # not labels
            assert _labels(conn) == {("k", "1", 1), ("", "z", 2), ("k", "2", 2), ("", "x", 3)}
            conn.execute(text("DELETE FROM videos WHERE id = 2"))
            assert _labels(conn) == {("k", "1", 1), ("", "x", 3)}
        migrations.downgrade(url, "0008")
        assert "video_labels" not in inspect(engine).get_table_names()
        with engine.begin() as conn:  # no trigger left behind to write to a missing table
            conn.execute(text(INSERT), {"h": "d" * 64, "tags": '["x"]', "meta": None})
            conn.execute(text("UPDATE videos SET tags = '[]'"))
            conn.execute(text("DELETE FROM videos"))
        migrations.upgrade(url)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
