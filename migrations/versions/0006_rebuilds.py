"""rebuilds: `hanet index rebuild` as a managed job with its own work list

A rebuild flipped every indexed row to pending and let any worker take them, so a serving
worker put some into the live build while the rebuild promoted a build without them: rows
said indexed, search could not reach them. Now a rebuild has its own row (at most one
running, held through a lease so that a killed one is resumed) and its own work list; the
videos' rows stay indexed and keep serving from the live build until the new one swaps in.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RUNNING = sa.text("state = 'running'")


def upgrade() -> None:
    op.create_table(
        "rebuilds",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=False),
        sa.Column("factory", sa.String(200), nullable=False),
        sa.Column("build", sa.String(100), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("state IN ('running', 'done', 'failed')", name="ck_rebuilds_state"),
    )
    op.create_index(
        "uq_rebuilds_one_running",
        "rebuilds",
        ["state"],
        unique=True,
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )
    op.create_table(
        "rebuild_videos",
        sa.Column(
            "rebuild_id",
            sa.Integer(),
            sa.ForeignKey("rebuilds.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("video_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'failed')",
            name="ck_rebuild_videos_status",
        ),
    )
    op.create_index("ix_rebuild_videos_status", "rebuild_videos", ["rebuild_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_rebuild_videos_status", table_name="rebuild_videos")
    op.drop_table("rebuild_videos")
    op.drop_index("uq_rebuilds_one_running", table_name="rebuilds")
    op.drop_table("rebuilds")
