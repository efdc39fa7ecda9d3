"""videos: indexing progress and segment count

A long video is indexed as many segments over minutes of work. ``indexed_s`` is how far into
the video the indexer has read while it works (progress shown by GET /videos/{id}); ``segments``
how many index units (segments) the indexed video has.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("indexed_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("segments", sa.Integer(), nullable=True))
    with op.batch_alter_table("rebuild_videos") as batch:  # the new build's units, until the swap
        batch.add_column(sa.Column("segments", sa.Integer(), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop a column; it must keep 0004's AUTOINCREMENT and the
    # highest id ever given (the copy would restart the sequence at the highest id left)
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    seq = "SELECT seq FROM sqlite_sequence WHERE name = 'videos'"
    highest = bind.execute(sa.text(seq)).scalar() if sqlite else None
    with op.batch_alter_table("rebuild_videos") as batch:
        batch.drop_column("segments")
    kwargs = {"sqlite_autoincrement": True}
    with op.batch_alter_table("videos", table_kwargs=kwargs) as batch:
        batch.drop_column("segments")
        batch.drop_column("indexed_s")
    if highest is not None:
        bind.execute(
            sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :n) WHERE name = 'videos'"),
            {"n": highest},
        )
