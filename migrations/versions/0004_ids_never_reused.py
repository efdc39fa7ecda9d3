"""videos: ids are never given twice (SQLite AUTOINCREMENT)

SQLite's plain INTEGER PRIMARY KEY gives a new row the highest id + 1, so the id of a deleted
newest video was given again, and a client, bookmark or cache holding it pointed at another
video. AUTOINCREMENT never gives an id twice. PostgreSQL's sequence never did: nothing to do.
The table is rebuilt with its rows; ids deleted before this migration above the highest
remaining id are not known to SQLite and may be given once more.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    kwargs = {"sqlite_autoincrement": autoincrement}
    with op.batch_alter_table("videos", recreate="always", table_kwargs=kwargs):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
