"""What the page's player needs of a video: a JPEG frame at a time (cached), and the file.

The file is served only as what it was verified to be: the media type its probe found (never
one guessed from its name), inline; a video whose indexing failed is not served at all."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from db import media, queue
from db.media import MediaMissing
from db.schema import Video, VideoStatus
from indexer.decode import DecodeError, decode_thumbnail, probe_media
from service.deps import StateDep, VideoDep, VideoId, video_row
from service.settings import HanetSettings
from service.state import ServiceState

router = APIRouter()

MAX_T_S = 7 * 86400


def thumbnail_cache(settings: HanetSettings) -> Path:
    """The folder of cached thumbnails, ``<content sha256>-<tenths of a second>.jpg``."""
    return settings.data_dir / "thumbnails"


def refuse_failed(video: Video) -> None:
    """404 for a video whose indexing failed: its file is not shown in any form."""
    if video.status == VideoStatus.FAILED.value:
        raise HTTPException(
            404,
            f"the file of video {video.id} is not served: indexing failed: {video.failure_reason}",
        )


def media_file(state: ServiceState, video: Video) -> Path:
    """The video's file on this host (a file stored in the database: this host's copy, made
    now when absent); 410 when a stored file is gone. Blocking: call it off the event loop."""
    try:
        return media.local_path(state.engine, video.media_path, state.settings.media)
    except MediaMissing as exc:
        raise HTTPException(410, f"the media file of video {video.id} is gone: {exc}") from exc


def drop_thumbnails(settings: HanetSettings, content_sha256: str) -> None:
    """Forget a video's cached thumbnails."""
    for cached in thumbnail_cache(settings).glob(f"{content_sha256}-*.jpg"):
        cached.unlink(missing_ok=True)


@router.get(
    "/videos/{video_id}/thumbnail",
    response_class=Response,
    summary="A JPEG frame of the video at `t` seconds (cached); past the end, the last one.",
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The frame."},
        404: {"description": "No such video, or one whose indexing failed."},
        410: {"description": "The media file is gone (no longer on disk or in the database)."},
        422: {"description": "A negative or huge time, or a file that cannot be decoded."},
    },
)
def thumbnail(
    video_id: VideoId,
    state: StateDep,
    t: Annotated[float, Query(ge=0, le=MAX_T_S, description="Seconds into the video.")] = 0.0,
) -> Response:
    video = video_row(video_id, state)  # not a VideoDep: a bad `t` is a 422 before any 404
    refuse_failed(video)
    if video.duration_s is not None:
        t = min(t, video.duration_s)  # past the end: the last frame (one cached copy of it)
    folder = thumbnail_cache(state.settings)
    cached = folder / f"{video.content_sha256}-{round(t * 10)}.jpg"  # 0.1 s steps
    headers = {"cache-control": "public, max-age=86400"}
    if cached.is_file():
        return Response(cached.read_bytes(), media_type="image/jpeg", headers=headers)
    try:
        jpeg = decode_thumbnail(str(media_file(state, video)), round(t * 10) / 10)
    except DecodeError as exc:
        raise HTTPException(422, f"cannot decode a frame of video {video.id}: {exc}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(jpeg)
    os.replace(tmp, cached)
    return Response(jpeg, media_type="image/jpeg", headers=headers)


@router.get(
    "/videos/{video_id}/file",
    response_class=FileResponse,
    summary="The stored video file, as the media type its probe found, inline; supports HTTP "
    "Range requests, so players can seek.",
    responses={
        200: {
            "content": {"video/mp4": {}, "video/webm": {}, "application/octet-stream": {}},
            "description": "The whole file, with the media type of its container "
            "(`application/octet-stream` for a video container without a common one).",
        },
        206: {"description": "The requested byte range."},
        404: {
            "description": "No such video, a video whose indexing failed, or a file that is "
            "not a video (one ingested before files were probed at ingest)."
        },
        410: {"description": "The media file is gone (no longer on disk or in the database)."},
        416: {"description": "A range outside the file."},
    },
)
def video_file(video: VideoDep, state: StateDep) -> FileResponse:
    refuse_failed(video)
    path = media_file(state, video)
    if not path.is_file():
        raise HTTPException(410, f"the media file of video {video.id} is no longer on disk")
    media_type = video.media_type or _probe_once(state, video, path)
    return FileResponse(path, media_type=media_type, headers={"content-disposition": "inline"})


def _probe_once(state: ServiceState, video: Video, path: Path) -> str:
    """The media type of a row ingested before types were stored: probed now, and kept."""
    try:
        media_type = probe_media(path).media_type
    except DecodeError as exc:
        raise HTTPException(
            404, f"the file of video {video.id} is not served: not a video: {exc}"
        ) from exc
    queue.set_media_type(state.engine, video.id, media_type)
    return media_type
