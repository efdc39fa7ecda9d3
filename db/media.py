"""Video files kept in the database (``HANET_MEDIA_STORE=database``), so that API replicas and
indexer workers on different hosts share them without a shared file system.

A stored file is named in ``videos.media_path`` as ``db:<sha256><suffix>``. Its bytes are
``media_chunks`` rows of ``CHUNK_BYTES`` each, written one transaction per chunk (a large
upload never holds one long transaction), then one ``media_blobs`` row that makes it visible.
Two hosts storing the same content write the same bytes under the same keys, so a chunk that
is already there is skipped, and an interrupted store is completed by the next one. Each host
reads a stored file through a local copy (``MediaCfg.cache_dir``), fetched chunk by chunk and
checked against its hash before it is used; the copies are trimmed, least recently used first,
beyond ``cache_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.schema import MediaBlob, MediaChunk, Video

PREFIX = "db:"
CHUNK_BYTES = 1024 * 1024  # fixed: a chunk's key is its place in the file
READ_CHUNKS = 8  # chunks fetched per query when a copy is made


class MediaMissing(Exception):
    """A stored file that is not (or no longer, or not wholly) in the database."""


@dataclass(frozen=True)
class MediaCfg:
    """Where files go (``store``: "files" keeps them in the upload folder, "database" in the
    database) and where this host keeps its copies of stored files."""

    store: str = "files"
    cache_dir: Path | None = None
    cache_bytes: int = 10 * 1024**3

    @property
    def in_database(self) -> bool:
        return self.store == "database"


def stored_name(sha256: str, suffix: str) -> str:
    """The ``media_path`` of a file stored in the database."""
    return f"{PREFIX}{sha256}{suffix}"


def is_stored(media_path: str) -> bool:
    return media_path.startswith(PREFIX)


def _name(media_path: str) -> str:
    """A stored file's name, ``<sha256><suffix>``: its copy's name on every host."""
    return media_path[len(PREFIX) :]


def put(engine: Engine, path: Path, sha256: str) -> bool:
    """Store the file at ``path`` (whose content hash is ``sha256``) unless it is stored
    already; True when this call made it visible."""
    with Session(engine) as session:
        if session.get(MediaBlob, sha256) is not None:
            return False
        present = set(session.scalars(select(MediaChunk.seq).where(_of(sha256))))
    size, seq = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            if seq not in present:
                _put_chunk(engine, sha256, seq, chunk)
            size, seq = size + len(chunk), seq + 1
    try:
        with Session(engine) as session, session.begin():
            session.add(MediaBlob(content_sha256=sha256, size=size, chunks=seq))
    except IntegrityError:  # another host stored the same content meanwhile
        return False
    return True


def _of(sha256: str):
    return MediaChunk.content_sha256 == sha256


def _put_chunk(engine: Engine, sha256: str, seq: int, data: bytes) -> None:
    try:
        with Session(engine) as session, session.begin():
            session.add(MediaChunk(content_sha256=sha256, seq=seq, data=data))
    except IntegrityError:  # the same bytes, written by another store of this content
        pass


def remove_unused(engine: Engine, sha256: str) -> bool:
    """Delete the stored file unless a video row still names it; True when deleted."""
    used = exists().where(Video.content_sha256 == sha256, Video.media_path.startswith(PREFIX))
    with Session(engine) as session, session.begin():
        if session.scalar(select(used)):
            return False
        session.execute(delete(MediaBlob).where(MediaBlob.content_sha256 == sha256))
        session.execute(delete(MediaChunk).where(_of(sha256)))
    return True


def copy_path(media_path: str, cfg: MediaCfg | None) -> Path:
    """Where this host keeps its copy of a stored file."""
    if cfg is None or cfg.cache_dir is None:
        raise MediaMissing(f"{media_path} is stored in the database; no local copy folder is set")
    return cfg.cache_dir / _name(media_path)


def local_path(engine: Engine, media_path: str, cfg: MediaCfg | None) -> Path:
    """The file a video row names, on this host: a stored file's local copy (made now when
    absent), any other path as it is. MediaMissing when a stored file cannot be had."""
    if not is_stored(media_path):
        return Path(media_path)
    copy = copy_path(media_path, cfg)
    if copy.is_file():
        os.utime(copy)  # recently used: trimmed last
        return copy
    _fetch(engine, _name(media_path)[:64], copy)
    trim(cfg.cache_dir, cfg.cache_bytes, keep=copy)
    return copy


def keep_copy(path: Path, media_path: str, cfg: MediaCfg) -> Path:
    """Make the file at ``path`` (just stored as ``media_path``) this host's copy of it, moved
    into the copy folder unless it is there already, the folder trimmed; returns the copy."""
    copy = copy_path(media_path, cfg)
    if path != copy:
        copy.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, copy)
    trim(cfg.cache_dir, cfg.cache_bytes, keep=copy)
    return copy


def _fetch(engine: Engine, sha256: str, copy: Path) -> None:
    """Write the stored file to ``copy``, a few chunks per query, checked against its hash
    and size before it takes its name."""
    with Session(engine) as session:
        blob = session.get(MediaBlob, sha256)
    if blob is None:
        raise MediaMissing(f"the file {sha256[:12]}... is not in the database")
    copy.parent.mkdir(parents=True, exist_ok=True)
    part, digest, size = copy.with_name(f".{uuid.uuid4().hex}.part"), hashlib.sha256(), 0
    try:
        with part.open("wb") as out:
            for first in range(0, blob.chunks, READ_CHUNKS):
                for data in _chunks(engine, sha256, first, min(first + READ_CHUNKS, blob.chunks)):
                    digest.update(data)
                    out.write(data)
                    size += len(data)
        if size != blob.size or digest.hexdigest() != sha256:
            raise MediaMissing(f"the file {sha256[:12]}... in the database is damaged")
        os.replace(part, copy)
    finally:
        part.unlink(missing_ok=True)


def _chunks(engine: Engine, sha256: str, first: int, end: int) -> list[bytes]:
    query = (
        select(MediaChunk.seq, MediaChunk.data)
        .where(_of(sha256), MediaChunk.seq >= first, MediaChunk.seq < end)
        .order_by(MediaChunk.seq)
    )
    with Session(engine) as session:
        rows = session.execute(query).all()
    if [seq for seq, _ in rows] != list(range(first, end)):
        raise MediaMissing(f"the file {sha256[:12]}... in the database lacks chunks")
    return [bytes(data) for _, data in rows]


def trim(folder: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used copies in ``folder`` until they fit in ``max_bytes``
    (never ``keep``, the one just used); returns those deleted."""
    files = []
    for entry in os.scandir(folder):
        if entry.is_file() and not entry.name.startswith("."):
            stat = entry.stat()
            files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
    total, gone = sum(size for _, size, _ in files), []
    for _, size, path in sorted(files):
        if total <= max_bytes:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size
            gone.append(path)
    return gone
