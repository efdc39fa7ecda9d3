"""videos: the ingest queue

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("media_path", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'indexed', 'failed')", name="ck_videos_status"
        ),
        sa.UniqueConstraint("content_sha256", name="uq_videos_content_sha256"),
    )
    op.create_index("ix_videos_status", "videos", ["status"])


def downgrade() -> None:
    op.drop_index("ix_videos_status", table_name="videos")
    op.drop_table("videos")
