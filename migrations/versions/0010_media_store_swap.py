"""video files in the database; a rebuild's swap marked before it happens

``media_blobs`` and ``media_chunks`` keep uploaded and downloaded video files in the database
when ``HANET_MEDIA_STORE=database``, so that API replicas and indexer workers on different
hosts read them without a shared file system. ``rebuilds.swap_started_at`` is set by one
conditional update before a rebuild swaps its build in; ``--cancel`` is one conditional update
that requires it unset, so a cancel can no longer fall between the swap and its bookkeeping.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rebuilds", sa.Column("swap_started_at", sa.DateTime(timezone=True)))
    op.create_table(
        "media_blobs",
        sa.Column("content_sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "media_chunks",
        sa.Column("content_sha256", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("media_chunks")
    op.drop_table("media_blobs")
    op.drop_column("rebuilds", "swap_started_at")  # SQLite 3.35+ drops in place
