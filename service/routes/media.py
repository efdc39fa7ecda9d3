"""What the page's player needs of a video: a JPEG frame at a time (cached), and the file."""

from __future__ import annotations

import mimetypes
import os
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from indexer.decode import DecodeError, decode_thumbnail
from service.deps import StateDep, VideoDep, VideoId, video_row
from service.settings import HanetSettings

router = APIRouter()

MAX_T_S = 7 * 86400


def thumbnail_cache(settings: HanetSettings) -> Path:
    """The folder of cached thumbnails, ``<content sha256>-<tenths of a second>.jpg``."""
    return settings.data_dir / "thumbnails"


def drop_thumbnails(settings: HanetSettings, content_sha256: str) -> None:
    """Forget a video's cached thumbnails."""
    for cached in thumbnail_cache(settings).glob(f"{content_sha256}-*.jpg"):
        cached.unlink(missing_ok=True)


@router.get(
    "/videos/{video_id}/thumbnail",
    response_class=Response,
    summary="A JPEG frame of the video at `t` seconds (cached).",
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The frame."},
        404: {"description": "No such video."},
        422: {"description": "A bad time, or a file that cannot be decoded."},
    },
)
def thumbnail(
    video_id: VideoId,
    state: StateDep,
    t: Annotated[float, Query(ge=0, le=MAX_T_S, description="Seconds into the video.")] = 0.0,
) -> Response:
    video = video_row(video_id, state)  # not a VideoDep: a bad `t` is a 422 before any 404
    if video.duration_s is not None and t > video.duration_s:
        raise HTTPException(422, f"t={t} s is past the end of the video ({video.duration_s} s)")
    folder = thumbnail_cache(state.settings)
    cached = folder / f"{video.content_sha256}-{round(t * 10)}.jpg"  # 0.1 s steps
    headers = {"cache-control": "public, max-age=86400"}
    if cached.is_file():
        return Response(cached.read_bytes(), media_type="image/jpeg", headers=headers)
    try:
        jpeg = decode_thumbnail(video.media_path, round(t * 10) / 10)
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
    summary="The stored video file; supports HTTP Range requests, so players can seek.",
    responses={
        200: {"content": {"video/mp4": {}}, "description": "The whole file."},
        206: {"description": "The requested byte range."},
        404: {"description": "No such video."},
        410: {"description": "The media file is no longer on disk."},
        416: {"description": "A range outside the file."},
    },
)
def video_file(video: VideoDep) -> FileResponse:
    path = Path(video.media_path)
    if not path.is_file():
        raise HTTPException(410, f"the media file of video {video.id} is no longer on disk")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=kind)
