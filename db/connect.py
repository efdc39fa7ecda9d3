"""Connections: an engine per database URL (SQLite tuned for one writer and many readers), the
read-only execution options, and the search path's lookup of its hits' rows."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import DBAPIError

from db.schema import Video


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets its parent folder, foreign keys and WAL journaling."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        # Transactions take SQLite's write lock when they begin (BEGIN IMMEDIATE), so that a
        # read-then-write such as claiming queue jobs cannot interleave with another writer;
        # waiting writers retry for up to 30 s.

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy, not the driver, begins transactions
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn) -> None:
            # a read-only transaction (READ_ONLY) never waits for a writer: WAL readers see
            # the last commit without any lock
            read_only = conn.get_execution_options().get("hanet_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


# Execution options of a transaction that only reads (SQLite then takes no write lock).
READ_ONLY = {"hanet_read_only": True}


@dataclass(frozen=True)
class HitRow:
    """What a search hit shows of its video's row."""

    title: str | None
    status: str
    concepts: dict | None  # as the indexer stored them (db.schema.Video.concepts)
    duration_s: float | None
    tags: list | None = None  # labels given at ingest or by PATCH
    meta: dict | None = None  # key/value metadata


class HitRows:
    """``hit_rows`` on one connection that its (single) calling thread keeps between calls, the
    search thread's: each lookup is its own short read-only transaction (it never waits for a
    writer), but no pool checkout, ping and reset per search. A lookup on a connection that
    fails is retried once on a new one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine.execution_options(**READ_ONLY)
        self._conn: Connection | None = None

    def __call__(self, video_ids: list[int]) -> dict[int, HitRow]:
        if not video_ids:
            return {}
        try:
            return self._read(video_ids)
        except DBAPIError:  # the connection broke: once more, on a new one
            return self._read(video_ids)

    def _read(self, video_ids: list[int]) -> dict[int, HitRow]:
        if self._conn is None:
            self._conn = self.engine.connect()
        try:
            with self._conn.begin():
                return _read_rows(self._conn, video_ids)
        except DBAPIError:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.close()
            self._conn = None


def hit_rows(engine: Engine, video_ids: list[int]) -> dict[int, HitRow]:
    """The rows of the videos among ``video_ids`` that exist (a search's hits), read without
    waiting for any writer, on a connection of the pool."""
    if not video_ids:
        return {}
    with engine.execution_options(**READ_ONLY).connect() as conn:
        return _read_rows(conn, video_ids)


def _read_rows(conn: Connection, video_ids: list[int]) -> dict[int, HitRow]:
    query = select(
        Video.id,
        Video.title,
        Video.status,
        Video.concepts,
        Video.duration_s,
        Video.tags,
        Video.meta,
    )
    rows = conn.execute(query.where(Video.id.in_(video_ids)))
    return {int(row[0]): HitRow(*row[1:]) for row in rows}
