"""The migrations build the schema the ORM expects, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import migrations
from db.connect import make_engine
from db.schema import Base, Video, VideoStatus


def _check_schema(url: str) -> None:
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"migrations and ORM models disagree: {diff}"
        with Session(engine) as session:
            session.add(Video(content_sha256="a" * 64, media_path="x.mp4", title="x"))
            session.commit()
            video = session.query(Video).one()
            assert video.status == VideoStatus.PENDING.value
            assert video.created_at is not None
        with Session(engine) as session:  # the same content twice is refused
            session.add(Video(content_sha256="a" * 64, media_path="y.mp4"))
            with pytest.raises(IntegrityError):
                session.commit()
        with Session(engine) as session:  # unknown status is refused by the database
            session.add(Video(content_sha256="b" * 64, media_path="z.mp4", status="lost"))
            with pytest.raises(IntegrityError):
                session.commit()
        migrations.downgrade(url, "base")
        assert "videos" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_migrations_on_sqlite(tmp_path) -> None:
    _check_schema(f"sqlite:///{tmp_path / 'nested' / 'hanet.sqlite3'}")


@pytest.mark.postgres
def test_migrations_on_postgres(postgres_url: str) -> None:
    _check_schema(postgres_url)
