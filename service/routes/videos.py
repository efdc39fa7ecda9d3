"""The videos: ingest (upload, path or URL), list, one video's state, its metadata, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db import media, queue
from db.media import is_stored
from db.schema import Video, VideoStatus
from indexer.fetch_url import AddressPolicy, FetchError, checked_addresses, parse_url
from indexer.writer import remove_videos
from service.deps import MAX_OFFSET, StateDep, VideoDep
from service.paging import BadCursor, decode_video_cursor, encode_video_cursor
from service.routes.media import drop_thumbnails
from service.schemas import (
    Title,
    VideoByPath,
    VideoByUrl,
    VideoList,
    VideoPatch,
    VideoPublic,
    stored_concepts,
)
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
                        "tags": {
                            "type": "string",
                            "description": "Tags, comma-separated (50 at most).",
                            "example": "pets, garden",
                        },
                        "metadata": {
                            "type": "string",
                            "description": "Key/value metadata: a JSON object of strings.",
                            "example": '{"camera": "phone"}',
                        },
                    },
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [VideoByPath.model_json_schema(), VideoByUrl.model_json_schema()]
                },
                "examples": {
                    "path": {"value": {"path": "clips/dog.mp4", "title": "the dog"}},
                    "url": {
                        "value": {
                            "url": "https://media.example.com/clips/dog.mp4",
                            "tags": ["pets"],
                            "metadata": {"source": "example"},
                        }
                    },
                },
            },
        }
    }
}
_INGEST_RESPONSES = {
    400: {
        "description": "A body that is not JSON, a malformed multipart body or `tags` / "
        "`metadata` field, ingest by path or "
        "by URL while it is off, or a URL refused: its host cannot be resolved or is a "
        "private, loopback, link-local, multicast or other non-public address (the detail "
        "says which; HANET_URL_ALLOW_PRIVATE / HANET_URL_ALLOW_NETWORKS allow them)."
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
        source_url=video.source_url,
        tags=video.tags or [],
        metadata=video.meta or {},
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
    summary="Ingest a video: multipart upload (field `file`, optional `title`, `tags`, "
    "`metadata`), "
    'JSON {"path": ...} under the media root, or JSON {"url": ...} (http/https, downloaded '
    "by the indexer worker: GET /videos/{id} shows its state and any failure's reason).",
    responses=_INGEST_RESPONSES,
    openapi_extra=_INGEST_BODY,
)
async def create_video(request: Request, state: StateDep) -> VideoPublic:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = await request.body()
        given = _json_object(body)
        if "url" in given:
            return await run_in_threadpool(enqueue_url, state, _by_url(given))
        received = await receive_by_path(body, state.settings)
        extra = VideoByPath.model_validate(given)  # valid: receive_by_path checked it
        return await run_in_threadpool(enqueue, state, received, extra.tags, extra.metadata)
    if kind == "multipart/form-data":
        received = await receive_upload(request, state.settings)
        return await run_in_threadpool(enqueue, state, received, received.tags, received.meta)
    raise HTTPException(
        415,
        'send multipart/form-data (field `file`) or application/json ({"path": ...} or '
        '{"url": ...})',
    )


def _json_object(body: bytes) -> dict:
    """The JSON body as an object ({} for anything else, which the by-path parser refuses)."""
    try:
        given = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return given if isinstance(given, dict) else {}


def _by_url(given: dict) -> VideoByUrl:
    try:
        return VideoByUrl.model_validate(given)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False)) from exc


def enqueue_url(state: ServiceState, given: VideoByUrl) -> VideoPublic:
    """Queue a video to be downloaded from a URL, once its host resolves to addresses the
    settings allow (400 with the reason otherwise; the worker checks again when it connects).
    Blocking (name resolution): call it in the thread pool."""
    settings = state.settings
    if not settings.url_ingest:
        raise HTTPException(400, "ingest by URL is off: HANET_URL_INGEST is false")
    policy = AddressPolicy.of(settings.url_allow_private, settings.url_allow_networks)
    try:
        parse_url(given.url)
        checked_addresses(given.url, policy)
    except FetchError as exc:
        raise HTTPException(400, str(exc)) from exc
    video_id, _created = queue.enqueue_url(
        state.engine, given.url, title=given.title, tags=given.tags, meta=given.metadata
    )
    with Session(state.engine) as session:
        return video_public(session.get(Video, video_id))


def enqueue(
    state: ServiceState,
    received: Received,
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
) -> VideoPublic:
    """Queue a received file for indexing (its existing row when the same content is known).
    A new upload is removed again when its row (or, with the media store in the database, the
    file) cannot be written; 507 when the database's disk is full."""
    media_path, stored = str(received.path), False
    try:
        if received.uploaded and state.settings.media.in_database:
            media_path, stored = _stored(state, received)
        video_id, created = queue.enqueue(
            state.engine,
            media_path=media_path,
            sha256=received.sha256,
            title=received.title,
            media_type=received.media.media_type,
            tags=tags,
            meta=meta,
        )
    except BaseException as exc:
        if received.new_file:
            received.path.unlink(missing_ok=True)
        if stored:
            media.remove_unused(state.engine, received.sha256)
        if isinstance(exc, OperationalError) and disk_full(exc):
            raise HTTPException(507, "the database's storage is full: not queued") from exc
        raise
    if stored and not created:  # known content, kept as a file by its row: not needed
        media.remove_unused(state.engine, received.sha256)
    with Session(state.engine) as session:
        return video_public(session.get(Video, video_id))


def _stored(state: ServiceState, received: Received) -> tuple[str, bool]:
    """An upload put in the database (``HANET_MEDIA_STORE=database``) for every host to read,
    this host keeping the file as its copy: (its media path, whether this call stored it)."""
    new = media.put(state.engine, received.path, received.sha256)
    media_path = media.stored_name(received.sha256, received.path.suffix)
    if received.new_file:  # else the file is another row's too: copied again on demand
        media.keep_copy(received.path, media_path, state.settings.media)
    return media_path, new


@router.get(
    "/videos",
    response_model=VideoList,
    summary="List videos, newest first.",
    responses={
        400: {"description": "A cursor this service did not make, or a cursor with an offset."}
    },
)
def list_videos(
    state: StateDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="The previous page's `next_cursor` (keyset paging: stable while "
            "videos are ingested, and as fast deep in the list as at its start).",
        ),
    ] = None,
) -> VideoList:
    query = select(Video).order_by(Video.id.desc())
    if cursor is not None:
        if offset:
            raise HTTPException(400, "give `cursor` or `offset`, not both")
        try:
            query = query.where(Video.id < decode_video_cursor(cursor))
        except BadCursor as exc:
            raise HTTPException(400, str(exc)) from exc
    with Session(state.reader) as session:
        total = session.scalar(select(func.count()).select_from(Video)) or 0
        rows = session.scalars(query.offset(offset).limit(limit + 1)).all()
        items = [video_public(v) for v in rows[:limit]]
    more = len(rows) > limit
    return VideoList(
        items=items,
        total=total,
        offset=offset,
        limit=limit,
        next_cursor=encode_video_cursor(items[-1].id) if more else None,
    )


@router.get(
    "/videos/{video_id}",
    response_model=VideoPublic,
    summary="One video's state.",
    responses=NO_VIDEO,
)
def get_video(video: VideoDep) -> VideoPublic:
    return video_public(video, with_concepts=True)


@changes.patch(
    "/videos/{video_id}",
    response_model=VideoPublic,
    summary="Change a video's title, tags or metadata (the fields sent replace the old ones).",
    responses={
        **NO_VIDEO,
        400: {"description": "A body that is not JSON."},
        422: {"description": "A field of the wrong shape or too long."},
    },
)
def patch_video(video: VideoDep, change: VideoPatch, state: StateDep) -> VideoPublic:
    values = {}
    sent = change.model_fields_set
    if "title" in sent:
        values["title"] = change.title
    if "tags" in sent:
        values["tags"] = change.tags
    if "metadata" in sent:
        values["meta"] = change.metadata
    with Session(state.engine) as session, session.begin():
        if values:
            session.execute(update(Video).where(Video.id == video.id).values(**values))
        row = session.get(Video, video.id)
        if row is None:  # deleted meanwhile
            raise HTTPException(404, f"no video {video.id}")
        return video_public(row, with_concepts=True)


@changes.delete(
    "/videos/{video_id}",
    status_code=204,
    summary="Delete a video (gone from search at once).",
    responses=NO_VIDEO,
)
def delete_video(video: VideoDep, state: StateDep) -> Response:
    if not remove_videos(state.engine, state.settings.index_dir, [video.id]):
        raise HTTPException(404, f"no video {video.id}")
    if video.content_sha256 is not None:  # None: ingested by URL, never downloaded
        drop_thumbnails(state.settings, video.content_sha256)
    if is_stored(video.media_path):  # in the database: this host's copy, and the stored file
        media.copy_path(video.media_path, state.settings.media).unlink(missing_ok=True)
        media.remove_unused(state.engine, video.content_sha256)
        return Response(status_code=204)
    path = Path(video.media_path)
    if video.media_path and path.resolve().parent == state.settings.upload_dir.resolve():
        path.unlink(missing_ok=True)  # an upload is ours; a file ingested by path is not
    return Response(status_code=204)
