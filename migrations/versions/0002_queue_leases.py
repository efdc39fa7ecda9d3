"""videos: queue leases, attempts, and the checkpoint that indexed each video

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("checkpoint_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        for column in (
            "indexed_at",
            "checkpoint_sha256",
            "attempts",
            "lease_expires_at",
            "claimed_by",
        ):
            batch.drop_column(column)
