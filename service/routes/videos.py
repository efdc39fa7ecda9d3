"""The videos: ingest (upload or path), list, one video's state, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video, VideoStatus
from indexer.writer import remove_videos
from service.deps import MAX_OFFSET, StateDep, VideoDep
from service.routes.media import drop_thumbnails
from service.schemas import Title, VideoByPath, VideoList, VideoPublic, stored_concepts
from service.state import ServiceState
from service.uploads import Received, receive_by_path, receive_upload

router = APIRouter()  # reading
changes = APIRouter()  # ingest and delete: behind the key when one is set (service.app)
NO_VIDEO = {404: {"description": "No such video."}}

_INGEST_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "minLength": 1},
                        "title": TypeAdapter(Title).json_schema(),
                    },
                }
            },
            "application/json": {"schema": VideoByPath.model_json_schema()},
        }
    }
}
_INGEST_RESPONSES = {
    400: {
        "description": "A body that is not JSON, a malformed multipart body, or ingest by path "
        "while it is off."
    },
    403: {"description": "A path that leaves the media root."},
    404: {"description": "No such file under the media root."},
    413: {"description": "An upload larger than the limit."},
    415: {
        "description": "Neither multipart/form-data nor application/json, or a file that is "
        "not a video (HTML, an image, audio only, junk...): the detail says why. A refused "
        "upload is not kept."
    },
    422: {"description": "A body of the wrong shape, no file, or an empty file."},
    507: {"description": "The server's storage is full; the upload was not kept."},
}


def disk_full(exc: OperationalError) -> bool:
    """SQLite's "database or disk is full", PostgreSQL's disk_full (SQLSTATE 53100)."""
    return getattr(exc.orig, "sqlstate", None) == "53100" or "disk is full" in str(exc.orig)


def video_public(video: Video, with_concepts: bool = False) -> VideoPublic:
    """A row as the API shows it; ``with_concepts``: with the concepts stored on it."""
    concepts = stored_concepts(video.status, video.concepts) if with_concepts else None
    return VideoPublic(
        id=video.id,
        status=video.status,
        title=video.title,
        failure_reason=video.failure_reason,
        duration_s=video.duration_s,
        progress=_progress(video),
        segments=video.segments if video.status == VideoStatus.INDEXED.value else None,
        concepts=concepts,
    )


def _progress(video: Video) -> float | None:
    """1 once indexed; while processing, how far the indexer has read (None before it says)."""
    if video.status == VideoStatus.INDEXED.value:
        return 1.0
    if video.status != VideoStatus.PROCESSING.value or not video.indexed_s or not video.duration_s:
        return None
    return round(min(0.99, video.indexed_s / video.duration_s), 3)


@changes.post(
    "/videos",
    status_code=202,
    response_model=VideoPublic,
    summary="Ingest a video: multipart upload (field `file`, optional `title`) or "
    'JSON {"path": ...} under the media root.',
    responses=_INGEST_RESPONSES,
    openapi_extra=_INGEST_BODY,
)
async def create_video(request: Request, state: StateDep) -> VideoPublic:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        received = await receive_by_path(await request.body(), state.settings)
    elif kind == "multipart/form-data":
        received = await receive_upload(request, state.settings)
    else:
        raise HTTPException(
            415, 'send multipart/form-data (field `file`) or application/json ({"path": ...})'
        )
    return await run_in_threadpool(enqueue, state, received)


def enqueue(state: ServiceState, received: Received) -> VideoPublic:
    """Queue a received file for indexing (its existing row when the same content is known).
    A new upload is removed again when its row cannot be written; 507 when the database's
    disk is full."""
    try:
        video_id, _created = queue.enqueue(
            state.engine,
            media_path=str(received.path),
            sha256=received.sha256,
            title=received.title,
            media_type=received.media.media_type,
        )
    except BaseException as exc:
        if received.new_file:
            received.path.unlink(missing_ok=True)
        if isinstance(exc, OperationalError) and disk_full(exc):
            raise HTTPException(507, "the database's storage is full: not queued") from exc
        raise
    with Session(state.engine) as session:
        return video_public(session.get(Video, video_id))


@router.get("/videos", response_model=VideoList, summary="List videos, newest first.")
def list_videos(
    state: StateDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> VideoList:
    with Session(state.reader) as session:
        total = session.scalar(select(func.count()).select_from(Video)) or 0
        rows = session.scalars(
            select(Video).order_by(Video.id.desc()).offset(offset).limit(limit)
        ).all()
        items = [video_public(v) for v in rows]
    return VideoList(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/videos/{video_id}",
    response_model=VideoPublic,
    summary="One video's state.",
    responses=NO_VIDEO,
)
def get_video(video: VideoDep) -> VideoPublic:
    return video_public(video, with_concepts=True)


@changes.delete(
    "/videos/{video_id}",
    status_code=204,
    summary="Delete a video (gone from search at once).",
    responses=NO_VIDEO,
)
def delete_video(video: VideoDep, state: StateDep) -> Response:
    if not remove_videos(state.engine, state.settings.index_dir, [video.id]):
        raise HTTPException(404, f"no video {video.id}")
    drop_thumbnails(state.settings, video.content_sha256)
    media = Path(video.media_path)
    if media.resolve().parent == state.settings.upload_dir.resolve():
        media.unlink(missing_ok=True)  # an upload is ours; a file ingested by path is not
    return Response(status_code=204)
