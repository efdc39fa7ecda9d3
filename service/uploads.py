"""The two ways a video file arrives: a multipart upload (written once as it arrives, under a
size limit, by service.form_stream, then named by its content hash) or a path under the media
root. Either way the file is probed (off the event loop) and refused with a 415 unless it is a
video; the media type the probe found is the one the file is later served with."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from indexer.decode import DecodeError, MediaInfo, probe_media
from model import file_sha256
from service.form_stream import StreamedFile, stream_upload
from service.schemas import TITLE_MAX_CHARS, Metadata, Tags, Title, VideoByPath
from service.settings import HanetSettings

FORM_SLACK_BYTES = 1024 * 1024  # multipart framing and the title, beyond the file itself


@dataclass(frozen=True)
class Received:
    """A video file that arrived and passed the probe: where it is, its title, what it is."""

    path: Path
    title: str | None
    media: MediaInfo
    sha256: str
    new_file: bool = False  # an upload stored now (not content already kept)
    tags: list[str] | None = None  # an upload's form fields `tags` and `metadata`
    meta: dict[str, str] | None = None
    uploaded: bool = False  # a multipart upload (the service's own file, not one by path)


def probe_video(path: Path) -> MediaInfo:
    """What the file at ``path`` is; 415 with the reason when it is not a video. Blocking:
    call it in the thread pool."""
    try:
        return probe_media(path)
    except DecodeError as exc:
        raise HTTPException(415, f"not a video: {exc}") from exc


async def receive_by_path(body: bytes, settings: HanetSettings) -> Received:
    """An ingest by path: its JSON body parsed, the file found under the media root and
    probed."""
    given = parse_by_path(body)
    path = under_media_root(settings, given.path)
    media = await run_in_threadpool(probe_video, path)
    return Received(path, given.title, media, await run_in_threadpool(file_sha256, path))


def parse_by_path(body: bytes) -> VideoByPath:
    """The JSON body of an ingest by path; 400 when it is not JSON, 422 when it is the wrong
    shape."""
    try:
        return VideoByPath.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False)) from exc


def under_media_root(settings: HanetSettings, given: str) -> Path:
    """The file ``given`` names under the media root: 400 when ingest by path is off, 403 when
    the path leaves the root, 404 when there is no such file."""
    if settings.media_root is None:
        raise HTTPException(400, "ingest by path is off: HANET_MEDIA_ROOT is not set")
    root = settings.media_root.resolve()
    try:
        path = (root / given).resolve()
        if not path.is_relative_to(root):
            raise HTTPException(403, "the path leaves the media root")
        found = path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte...: no such file either
        found = False
    if not found:
        raise HTTPException(404, f"no file {given!r} under the media root")
    return path


async def receive_upload(request: Request, settings: HanetSettings) -> Received:
    """Store a multipart upload (field ``file``, optional ``title``, ``tags``, ``metadata``) in
    the upload folder as
    ``<sha256><suffix>``, read and written once as it arrives; its title is the file's name
    when none is given. 413 past ``settings.max_upload_bytes`` (at once when the request
    declares a larger length), 422 without a file or with an empty one, 415 when it is not a
    video, 507 on a full disk, 422 for a title that is not one; nothing is kept then."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_SLACK_BYTES:
        raise HTTPException(413, f"upload larger than {limit} bytes")
    streamed = await stream_upload(request, settings.upload_dir, limit)
    title = _title(streamed)
    tags, meta = _labels(streamed)
    try:
        media = await run_in_threadpool(probe_video, streamed.path)
        final = streamed.path.with_name(
            streamed.sha256 + Path(streamed.filename).suffix.lower()[:10]
        )
        new_file = not final.exists()
        os.replace(streamed.path, final)  # a rename: the bytes are written once
    finally:
        streamed.path.unlink(missing_ok=True)
    return Received(final, title, media, streamed.sha256, new_file, tags, meta, uploaded=True)


TITLE = TypeAdapter(Title)
TAGS = TypeAdapter(Tags)
METADATA = TypeAdapter(Metadata)


def _labels(streamed: StreamedFile) -> tuple[list[str] | None, dict[str, str] | None]:
    """The upload's form fields ``tags`` (comma-separated) and ``metadata`` (a JSON object of
    strings), checked as for an ingest by path; 400 saying what is wrong (a form field the
    schema cannot describe: free text), the file dropped."""
    tags, meta = None, None
    try:
        text = streamed.fields.get("tags")
        if text is not None:
            field = "tags"
            tags = TAGS.validate_python([t.strip() for t in text.split(",") if t.strip()])
        text = streamed.fields.get("metadata")
        if text is not None:
            field = "metadata"
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise HTTPException(400, f"metadata: not JSON ({exc})") from exc
            meta = METADATA.validate_python(parsed, strict=True)
    except (ValidationError, HTTPException) as exc:
        streamed.path.unlink(missing_ok=True)
        if isinstance(exc, HTTPException):
            raise
        problems = "; ".join(e["msg"] for e in exc.errors(include_url=False))
        raise HTTPException(400, f"{field}: {problems}") from exc
    return tags, meta


def _title(streamed: StreamedFile) -> str | None:
    """The upload's title: the form's (422 unless a valid title), else the file's name made
    one (NUL characters dropped, cut to length)."""
    given = streamed.fields.get("title")
    if given:
        try:
            return TITLE.validate_python(given)
        except ValidationError as exc:
            streamed.path.unlink(missing_ok=True)
            raise HTTPException(422, exc.errors(include_url=False)) from exc
    name = streamed.filename.replace("\x00", "")[:TITLE_MAX_CHARS]
    return name or None
