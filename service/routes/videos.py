"""The videos: ingest (upload or path), list, one video's state, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import queue
from db.schema import Video
from indexer.writer import remove_videos
from model import file_sha256
from service.deps import MAX_ID, KeyDep, StateDep, VideoDep
from service.routes.media import drop_thumbnails
from service.schemas import VideoByPath, VideoList, VideoPublic, stored_concepts
from service.state import ServiceState
from service.uploads import parse_by_path, receive_upload, under_media_root

router = APIRouter()

_INGEST_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string"},
                    },
                }
            },
            "application/json": {"schema": VideoByPath.model_json_schema()},
        }
    }
}


def video_public(video: Video, with_concepts: bool = False) -> VideoPublic:
    """A row as the API shows it; ``with_concepts``: with the concepts stored on it."""
    concepts = stored_concepts(video.status, video.concepts) if with_concepts else None
    return VideoPublic(
        id=video.id,
        status=video.status,
        title=video.title,
        failure_reason=video.failure_reason,
        duration_s=video.duration_s,
        concepts=concepts,
    )


@router.post(
    "/videos",
    status_code=202,
    response_model=VideoPublic,
    summary="Ingest a video: multipart upload (field `file`, optional `title`) or "
    'JSON {"path": ...} under the media root.',
    openapi_extra=_INGEST_BODY,
)
async def create_video(request: Request, state: StateDep, _key: KeyDep) -> VideoPublic:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = parse_by_path(await request.body())
        path = under_media_root(state.settings, body.path)
        return await run_in_threadpool(enqueue, state, path, body.title)
    if kind == "multipart/form-data":
        path, title = await receive_upload(request, state.settings)
        return await run_in_threadpool(enqueue, state, path, title)
    raise HTTPException(
        415, 'send multipart/form-data (field `file`) or application/json ({"path": ...})'
    )


def enqueue(state: ServiceState, path: Path, title: str | None) -> VideoPublic:
    """Queue ``path`` for indexing (its existing row when the same content is known)."""
    video_id, _created = queue.enqueue(
        state.engine, media_path=str(path), sha256=file_sha256(path), title=title
    )
    with Session(state.engine) as session:
        return video_public(session.get(Video, video_id))


@router.get("/videos", response_model=VideoList, summary="List videos, newest first.")
def list_videos(
    state: StateDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> VideoList:
    with Session(state.reader) as session:
        total = session.scalar(select(func.count()).select_from(Video)) or 0
        rows = session.scalars(
            select(Video).order_by(Video.id.desc()).offset(offset).limit(limit)
        ).all()
        items = [video_public(v) for v in rows]
    return VideoList(items=items, total=total, offset=offset, limit=limit)


@router.get("/videos/{video_id}", response_model=VideoPublic, summary="One video's state.")
def get_video(video: VideoDep) -> VideoPublic:
    return video_public(video, with_concepts=True)


@router.delete(
    "/videos/{video_id}", status_code=204, summary="Delete a video (gone from search at once)."
)
def delete_video(_key: KeyDep, video: VideoDep, state: StateDep) -> Response:
    if not remove_videos(state.engine, state.settings.index_dir, [video.id]):
        raise HTTPException(404, f"no video {video.id}")
    drop_thumbnails(state.settings, video.content_sha256)
    media = Path(video.media_path)
    if media.resolve().parent == state.settings.upload_dir.resolve():
        media.unlink(missing_ok=True)  # an upload is ours; a file ingested by path is not
    return Response(status_code=204)
