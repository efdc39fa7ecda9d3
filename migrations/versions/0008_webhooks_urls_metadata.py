"""webhook outbox, ingest by URL, video metadata

``webhook_deliveries`` is the outbox of the webhook events (a video indexed or failed), written
in the transaction that changes the video's status and delivered by a background loop. A video
ingested by URL has its ``source_url`` and no content hash (nor file) until the worker
downloads it, so ``content_sha256`` may now be NULL (the unique constraint allows any number of
NULLs on both databases). ``tags`` and ``meta`` hold a video's labels and key/value metadata.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("video_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_webhook_deliveries_video_id", "webhook_deliveries", ["video_id"])
    with _videos_rebuilt() as batch:
        batch.alter_column("content_sha256", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("source_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("meta", sa.JSON(), nullable=True))


def downgrade() -> None:
    # a video ingested by URL and not yet downloaded has no content hash, which the old schema
    # requires: there is no file of it to keep, so its row goes
    op.execute(sa.text("DELETE FROM videos WHERE content_sha256 IS NULL"))
    with _videos_rebuilt() as batch:
        batch.drop_column("meta")
        batch.drop_column("tags")
        batch.drop_column("source_url")
        batch.alter_column("content_sha256", existing_type=sa.String(64), nullable=False)
    op.drop_index("ix_webhook_deliveries_video_id", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")


@contextlib.contextmanager
def _videos_rebuilt() -> Iterator[BatchOperations]:
    """``op.batch_alter_table("videos")`` keeping, on SQLite (which rebuilds the table), 0004's
    AUTOINCREMENT and the highest id ever given: the copy would restart the sequence at the
    highest id left, giving a deleted newest video's id again."""
    bind = op.get_bind()
    highest = None
    if bind.dialect.name == "sqlite":
        highest = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'videos'"))
        highest = highest.scalar()
    with op.batch_alter_table("videos", table_kwargs={"sqlite_autoincrement": True}) as batch:
        yield batch
    if highest is not None:
        bind.execute(
            sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :n) WHERE name = 'videos'"),
            {"n": highest},
        )
