"""videos: the HTTP media type of the file, probed from its container at ingest

The file route served a video with the type its file name suggested, so an upload named x.html
came back as text/html. The type now comes from the probe; rows ingested before keep NULL and
are probed once when their file is first asked for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("media_type", sa.String(100), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop a column; it must keep 0004's AUTOINCREMENT
    kwargs = {"sqlite_autoincrement": True}
    with op.batch_alter_table("videos", table_kwargs=kwargs) as batch:
        batch.drop_column("media_type")
