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


@pytest.mark.slow
def test_the_app_refuses_an_old_schema_unless_it_may_migrate(tmp_path) -> None:
    """With auto_migrate off (compose runs `hanet db upgrade` once), the API never migrates:
    it refuses to start on a database behind the code, and says what to run."""
    from fastapi.testclient import TestClient

    from model import create_model
    from service.app import create_app
    from service.runtime import SchemaError
    from service.settings import HanetSettings

    checkpoint = tmp_path / "m.pt"
    create_model("tiny").save(str(checkpoint))
    settings = HanetSettings(data_dir=tmp_path / "data", checkpoint=checkpoint, auto_migrate=False)
    url = settings.resolved_database_url
    engine = make_engine(url)
    try:
        for revision in (None, "0002"):  # never migrated; one migration behind
            if revision is not None:
                migrations.upgrade(url, revision)
            with (
                pytest.raises(SchemaError, match="hanet db upgrade"),
                TestClient(create_app(settings)),
            ):
                pass
            assert migrations.current_revision(engine) == revision  # left as it was
        with TestClient(create_app(settings.model_copy(update={"auto_migrate": True}))) as c:
            assert c.get("/ready").json()["checks"]["database"] == "ok"
        assert migrations.current_revision(engine) == migrations.head_revision()
        with TestClient(create_app(settings)) as c:  # current now: it starts without migrating
            assert c.post("/videos", json={"path": "x.mp4"}).status_code == 400  # no media root
            assert c.get("/videos").json()["total"] == 0
    finally:
        engine.dispose()


def _ids_after_deleting_the_newest(engine, tag: str = "x") -> list[int]:
    """Add two videos, delete the newest, add one more (contents named by ``tag``): the ids
    given, in order."""
    from sqlalchemy import delete, insert

    table = Video.__table__  # only the columns named: the file may be at an older revision
    ids = []
    for n in range(3):
        with engine.begin() as conn:
            row = {"content_sha256": f"{tag}{n}" * 32, "media_path": f"{tag}{n}.mp4"}
            ids.append(conn.execute(insert(table).values(**row)).inserted_primary_key[0])
            if n == 1:
                conn.execute(delete(table).where(table.c.id == ids[-1]))
    return ids


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_deleted_video_s_id_is_never_given_again(database, tmp_path, request) -> None:
    url = (
        f"sqlite:///{tmp_path / 'ids.sqlite3'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        first, second, third = _ids_after_deleting_the_newest(engine)
        assert first < second < third
    finally:
        engine.dispose()
        migrations.downgrade(url, "base")


def test_an_existing_sqlite_file_keeps_its_rows_and_stops_reusing_ids(tmp_path) -> None:
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    migrations.upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as conn:  # a file written before: plain INTEGER PRIMARY KEY
        for i in (1, 2, 5):
            conn.execute(
                text(
                    "INSERT INTO videos (id, content_sha256, media_path, status, attempts, "
                    "created_at, updated_at) VALUES (:i, :h, :p, 'indexed', 1, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"i": i, "h": f"{i:064d}", "p": f"{i}.mp4"},
            )
    assert _ids_after_deleting_the_newest(engine, "a") == [6, 7, 7]  # before: 7 given twice
    engine.dispose()
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            kept = [(v.id, v.media_path, v.status) for v in session.query(Video).order_by(Video.id)]
        assert kept == [
            (1, "1.mp4", "indexed"),
            (2, "2.mp4", "indexed"),
            (5, "5.mp4", "indexed"),
            (6, "a0.mp4", "pending"),
            (7, "a2.mp4", "pending"),
        ]
        assert _ids_after_deleting_the_newest(engine, "b") == [8, 9, 10]  # 9 not given again
    finally:
        engine.dispose()
