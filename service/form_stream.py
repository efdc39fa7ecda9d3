"""A multipart upload read as it arrives: the one file part goes straight into a file in the
upload folder (written once, hashed on the way, refused the moment it passes the size limit,
whether the request declared a length or was sent chunked); the few small text fields are kept
in memory. Whatever goes wrong, nothing is left on disk."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

WRITE_BYTES = 1 << 20  # file bytes gathered before one write (off the event loop)
MAX_FIELD_BYTES = 64 * 1024  # the text fields (the title) together
FULL_DISK = {errno.ENOSPC, errno.EDQUOT}


@dataclass
class StreamedFile:
    """The file part of an upload, stored: where, its size and sha256, the client's name for
    it, and the form's text fields."""

    path: Path
    size: int
    sha256: str
    filename: str
    fields: dict[str, str]


@dataclass
class _Parts:
    """python-multipart's callbacks: one file part (field ``file``) whose bytes wait in
    ``pending`` for the next write, and small text fields."""

    limit: int
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    pending: list[bytes] = field(default_factory=list)
    size: int = 0
    _header: bytes = b""
    _value: bytes = b""
    _disposition: bytes = b""
    _name: str = ""
    _in_file: bool = False
    _text: bytearray = field(default_factory=bytearray)
    _text_bytes: int = 0
    ended: bool = False  # the closing boundary was seen

    def on_part_begin(self) -> None:
        self._disposition, self._in_file, self._text = b"", False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise HTTPException(400, "a multipart part without a name")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._name != "file" or self.filename is not None:
                raise HTTPException(422, "send one file, in the multipart field `file`")
            self.filename = options[b"filename"].decode("utf-8", "replace")
            self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.limit:
                raise HTTPException(413, f"upload larger than {self.limit} bytes")
            self.pending.append(data[start:end])
            return
        self._text_bytes += end - start
        if self._text_bytes > MAX_FIELD_BYTES:
            raise HTTPException(413, f"form fields larger than {MAX_FIELD_BYTES} bytes")
        self._text.extend(data[start:end])

    def on_part_end(self) -> None:
        if not self._in_file:
            self.fields[self._name] = self._text.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def callbacks(self) -> dict:
        names = "part_begin header_field header_value header_end headers_finished part_data"
        return {f"on_{n}": getattr(self, f"on_{n}") for n in (names + " part_end end").split()}


async def stream_upload(request: Request, folder: Path, limit: int) -> StreamedFile:
    """Read a multipart/form-data request, writing its ``file`` part to a new hidden file in
    ``folder`` (flushed to disk before returning). 400 for a malformed body, 413 past ``limit``
    bytes, 422 without a file or with an empty one, 507 when the disk is full; in every such
    case the partial file is removed."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "a multipart body without a boundary")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".upload-{uuid.uuid4().hex}"
    parts, digest = _Parts(limit), hashlib.sha256()
    try:
        with open(path, "xb") as out:
            await _copy(request, MultipartParser(boundary, parts.callbacks()), parts, out, digest)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        mapped = _as_http(exc)
        if mapped is exc:
            raise
        raise mapped from exc
    if parts.filename is None or parts.size == 0:
        path.unlink()
        missing = "the uploaded file is empty" if parts.filename else "no multipart field `file`"
        raise HTTPException(422, missing)
    return StreamedFile(path, parts.size, digest.hexdigest(), parts.filename, parts.fields)


async def _copy(
    request: Request, parser: MultipartParser, parts: _Parts, out: BinaryIO, digest
) -> None:
    """Feed the body to ``parser`` as it arrives; write the file's bytes a block at a time."""
    async for chunk in request.stream():
        parser.write(chunk)
        if sum(map(len, parts.pending)) >= WRITE_BYTES:
            await run_in_threadpool(_write, out, parts, digest)
    parser.finalize()
    if not parts.ended:
        raise HTTPException(400, "a malformed multipart body: it ends before its last boundary")
    await run_in_threadpool(_write, out, parts, digest, True)


def _write(out: BinaryIO, parts: _Parts, digest, last: bool = False) -> None:
    data = b"".join(parts.pending)
    parts.pending.clear()
    digest.update(data)
    out.write(data)
    if last:
        out.flush()
        os.fsync(out.fileno())  # on disk before a row points at it


def _as_http(exc: BaseException) -> BaseException:
    """The client's view of what stopped an upload: a full disk is a 507, a malformed body or
    a client that went away a 400; anything else (an HTTP error already) as it was."""
    if isinstance(exc, OSError) and exc.errno in FULL_DISK:
        return HTTPException(507, "the server's storage is full: the upload was not kept")
    if isinstance(exc, MultipartParseError):
        return HTTPException(400, f"a malformed multipart body: {exc}")
    if isinstance(exc, ClientDisconnect):  # nobody is left to read the answer
        return HTTPException(400, "the client went away before the upload ended")
    return exc
