"""video labels: tags and metadata as indexed rows, for search filters

``video_labels`` holds one row per tag (``key`` '') and per metadata pair (``key``, ``value``)
of every video, kept equal to the JSON columns ``videos.tags`` and ``videos.meta`` by triggers
(insert, update of either column, delete) on both databases, so that every writer (ingest,
PATCH, a future one) keeps it right without knowing it exists. Metadata values over 512 bytes
(UTF-8) are left out (a B-tree key has a size limit); filters on those read the JSON. Search
filters look labels up by their primary key (key, value, video_id) instead of scanning the JSON
of every row. Also
indexes ``videos.created_at`` and ``duration_s`` for the ingest date and duration filters.

A later migration that rebuilds ``videos`` on SQLite (``batch_alter_table``) drops its
triggers: it must create them again (``create_triggers``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_SQLITE_FILL = """
    INSERT OR IGNORE INTO video_labels (key, value, video_id)
        SELECT '', value, NEW.id FROM json_each(NEW.tags)
        WHERE json_type(NEW.tags) = 'array' AND type = 'text';
    INSERT OR IGNORE INTO video_labels (key, value, video_id)
        SELECT key, value, NEW.id FROM json_each(NEW.meta)
        WHERE json_type(NEW.meta) = 'object' AND type = 'text'
        AND length(CAST(value AS BLOB)) <= 512;
"""
SQLITE_TRIGGERS = (
    f"CREATE TRIGGER video_labels_insert AFTER INSERT ON videos BEGIN {_SQLITE_FILL} END",
    "CREATE TRIGGER video_labels_update AFTER UPDATE OF tags, meta ON videos BEGIN "
    f"DELETE FROM video_labels WHERE video_id = OLD.id; {_SQLITE_FILL} END",
    "CREATE TRIGGER video_labels_delete AFTER DELETE ON videos BEGIN "
    "DELETE FROM video_labels WHERE video_id = OLD.id; END",
)
POSTGRES_FUNCTION = """
CREATE FUNCTION hanet_video_labels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM video_labels WHERE video_id = OLD.id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF json_typeof(NEW.tags) = 'array' THEN
            INSERT INTO video_labels (key, value, video_id)
                SELECT '', t, NEW.id FROM json_array_elements_text(NEW.tags) AS t
                ON CONFLICT DO NOTHING;
        END IF;
        IF json_typeof(NEW.meta) = 'object' THEN
            INSERT INTO video_labels (key, value, video_id)
                SELECT e.key, e.value, NEW.id FROM json_each_text(NEW.meta) AS e
                WHERE e.value IS NOT NULL AND octet_length(e.value) <= 512
                ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGER = (
    "CREATE TRIGGER video_labels AFTER INSERT OR DELETE OR UPDATE OF tags, meta ON videos "
    "FOR EACH ROW EXECUTE FUNCTION hanet_video_labels()"
)


def create_triggers() -> None:
    """The triggers that keep ``video_labels`` equal to the JSON columns."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "video_labels",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(1000), primary_key=True),
        sa.Column("video_id", sa.Integer(), primary_key=True, autoincrement=False),
    )
    op.create_index("ix_video_labels_video_id", "video_labels", ["video_id"])
    op.create_index("ix_videos_created_at", "videos", ["created_at"])
    op.create_index("ix_videos_duration_s", "videos", ["duration_s"])
    create_triggers()
    # the labels of the rows already there: each row "updated" to itself fires the trigger
    op.execute("UPDATE videos SET tags = tags WHERE tags IS NOT NULL OR meta IS NOT NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER video_labels ON videos")
        op.execute("DROP FUNCTION hanet_video_labels()")
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER video_labels_{name}")
    op.drop_index("ix_videos_duration_s", table_name="videos")
    op.drop_index("ix_videos_created_at", table_name="videos")
    op.drop_index("ix_video_labels_video_id", table_name="video_labels")
    op.drop_table("video_labels")
