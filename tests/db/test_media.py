"""Video files kept in the database (db.media), on SQLite and PostgreSQL: stored in chunks
and visible only once whole, copied to a host's folder checked against their hash, an
interrupted store completed by the next, damage detected, deleted once no row names them, and
the copies trimmed least recently used first."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db import media, queue
from db.connect import make_engine
from db.media import CHUNK_BYTES, MediaCfg, MediaMissing
from db.schema import MediaBlob, MediaChunk, Video


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _file(tmp_path, size: int, seed: int = 0):
    data = bytes((i * 7 + seed) % 251 for i in range(size))
    path = tmp_path / f"in{seed}.mp4"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


def _chunks(engine, sha: str) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(MediaChunk.content_sha256 == sha))


def test_a_stored_file_is_copied_whole_to_another_host(engine, tmp_path) -> None:
    path, data, sha = _file(tmp_path, 2 * CHUNK_BYTES + 1000)
    assert media.put(engine, path, sha) and not media.put(engine, path, sha)
    assert _chunks(engine, sha) == 3
    name = media.stored_name(sha, ".mp4")
    assert name == f"db:{sha}.mp4" and media.is_stored(name) and not media.is_stored(str(path))
    other_host = MediaCfg("database", tmp_path / "cache-b")
    copy = media.local_path(engine, name, other_host)
    assert copy.parent == other_host.cache_dir and copy.read_bytes() == data
    assert media.local_path(engine, str(path), other_host) == path  # a plain path: itself
    with pytest.raises(MediaMissing, match="no local copy folder"):
        media.local_path(engine, name, None)
    assert sorted(p.name for p in other_host.cache_dir.iterdir()) == [f"{sha}.mp4"]


def test_an_interrupted_store_is_invisible_until_completed(engine, tmp_path) -> None:
    path, data, sha = _file(tmp_path, 3 * CHUNK_BYTES)
    cfg = MediaCfg("database", tmp_path / "cache")
    assert media.put(engine, path, sha)
    with Session(engine) as session, session.begin():  # as if killed before the last write
        session.execute(delete(MediaBlob))
        session.execute(delete(MediaChunk).where(MediaChunk.seq == 2))
    with pytest.raises(MediaMissing, match="not in the database"):
        media.local_path(engine, media.stored_name(sha, ".mp4"), cfg)
    assert media.put(engine, path, sha)  # the next store completes it
    assert media.local_path(engine, media.stored_name(sha, ".mp4"), cfg).read_bytes() == data


def test_a_damaged_or_incomplete_file_is_refused_and_not_copied(engine, tmp_path) -> None:
    path, _, sha = _file(tmp_path, 2 * CHUNK_BYTES)
    cfg = MediaCfg("database", tmp_path / "cache")
    media.put(engine, path, sha)
    with Session(engine) as session, session.begin():
        session.execute(update(MediaChunk).where(MediaChunk.seq == 1).values(data=b"x" * 10))
    with pytest.raises(MediaMissing, match="damaged"):
        media.local_path(engine, media.stored_name(sha, ".mp4"), cfg)
    with Session(engine) as session, session.begin():
        session.execute(delete(MediaChunk).where(MediaChunk.seq == 1))
    with pytest.raises(MediaMissing, match="lacks chunks"):
        media.local_path(engine, media.stored_name(sha, ".mp4"), cfg)
    assert list(cfg.cache_dir.iterdir()) == []  # no copy, no leftover part


def test_a_stored_file_is_deleted_once_no_row_names_it(engine, tmp_path) -> None:
    path, _, sha = _file(tmp_path, 1000)
    media.put(engine, path, sha)
    video_id, _ = queue.enqueue(engine, media_path=media.stored_name(sha, ".mp4"), sha256=sha)
    assert not media.remove_unused(engine, sha)
    with Session(engine) as session, session.begin():
        session.execute(delete(Video).where(Video.id == video_id))
    assert media.remove_unused(engine, sha)
    with Session(engine) as session:
        assert session.get(MediaBlob, sha) is None
    assert _chunks(engine, sha) == 0


def test_copies_are_trimmed_least_recently_used_first(engine, tmp_path) -> None:
    cfg = MediaCfg("database", tmp_path / "cache", cache_bytes=2500)
    names = []
    for seed in range(3):
        path, _, sha = _file(tmp_path, 1000, seed)
        media.put(engine, path, sha)
        names.append(media.stored_name(sha, ".mp4"))
    for i, name in enumerate(names[:2]):
        copy = media.local_path(engine, name, cfg)
        os.utime(copy, (1000 + i, 1000 + i))  # the first is the least recently used
    media.local_path(engine, names[0], cfg)  # used again: now the most recent
    media.local_path(engine, names[2], cfg)  # a third copy: over the limit, one goes
    kept = sorted(p.name for p in cfg.cache_dir.iterdir())
    assert kept == sorted(n[3:] for n in (names[0], names[2]))


def test_a_stored_file_becomes_this_host_s_copy_within_the_limit(engine, tmp_path) -> None:
    """An upload or download just stored is moved into the copy folder (or left there when it
    is there already), and the folder is trimmed to its limit, never that copy."""
    cfg = MediaCfg("database", tmp_path / "cache", cache_bytes=1500)
    old = cfg.cache_dir / "old.mp4"
    cfg.cache_dir.mkdir()
    old.write_bytes(b"x" * 1000)
    path, data, sha = _file(tmp_path, 1000)
    media.put(engine, path, sha)
    name = media.stored_name(sha, ".mp4")
    copy = media.keep_copy(path, name, cfg)
    assert copy == media.copy_path(name, cfg) and copy.read_bytes() == data
    assert not path.exists() and not old.exists()  # moved; the older copy trimmed
    assert media.keep_copy(copy, name, cfg) == copy and copy.read_bytes() == data  # in place
