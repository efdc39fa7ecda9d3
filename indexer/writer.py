"""The indexing job's writer side, and deletes: what changes the index and the rows together."""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from db.schema import Video
from index.reader import BuildError
from index.writer import delete_videos


def remove_videos(engine: Engine, index_dir: Path, video_ids: list[int]) -> list[int]:
    """Delete videos' rows and tombstone them in the published build (gone from search at once,
    from the index files at compaction). Returns the ids that existed."""
    with Session(engine) as session, session.begin():
        found = list(session.scalars(select(Video.id).where(Video.id.in_(video_ids))))
        session.execute(delete(Video).where(Video.id.in_(found)))
    if found:
        with contextlib.suppress(BuildError):  # nothing indexed yet: the rows were all there was
            delete_videos(index_dir, found)
    return found
