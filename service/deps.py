"""The routes' dependencies, as ``Annotated`` aliases: the shared state, the access checks (the
key for changes; for reads too when the library is private), one video's row."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from db.schema import Video
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.hanet


StateDep = Annotated[ServiceState, Depends(get_state)]


API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The service's key (HANET_API_KEY): needed to change data, and to read when "
    "HANET_PROTECT_READS is set.",
)
MEDIA_COOKIE = "hanet_media"  # POST /session sets it: what <video> and <img> send for files
MEDIA_COOKIE_MAX_AGE_S = 12 * 3600


def key_matches(state: ServiceState, given: str | None) -> bool:
    """Whether ``given`` is the configured key, compared in constant time."""
    expected = state.settings.api_key
    if expected is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def require_key(
    state: StateDep, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None
) -> None:
    """Endpoints that change data need the API key, when one is configured."""
    if state.settings.api_key is not None and not key_matches(state, x_api_key):
        raise HTTPException(401, "missing or wrong X-API-Key")


def require_read(
    request: Request,
    state: StateDep,
    x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
) -> None:
    """Endpoints that read the library need the key when HANET_PROTECT_READS is set: in
    X-API-Key, or for a GET (a page's <video> and <img> cannot send headers) the media cookie
    that POST /session set."""
    if not state.settings.protect_reads or key_matches(state, x_api_key):
        return
    if request.method == "GET" and media_token_valid(state, request.cookies.get(MEDIA_COOKIE)):
        return
    raise HTTPException(401, "this library is private: send X-API-Key")


def media_token(state: ServiceState, expires: int) -> str:
    """A cookie value good until ``expires`` (Unix seconds): the time and its HMAC under the
    key, so the cookie never holds the key and a new key ends every session."""
    return f"{expires}.{_token_mac(state, expires)}"


def media_token_valid(state: ServiceState, token: str | None) -> bool:
    expires, _, mac = (token or "").partition(".")
    if not expires.isdigit() or int(expires) < time.time() or state.settings.api_key is None:
        return False
    return hmac.compare_digest(mac.encode(), _token_mac(state, int(expires)).encode())


def _token_mac(state: ServiceState, expires: int) -> str:
    key = state.settings.api_key.get_secret_value().encode()
    return hmac.new(key, f"hanet-media:{expires}".encode(), hashlib.sha256).hexdigest()


KeyDep = Depends(require_key)  # for a router's `dependencies` (service.app)
ReadDep = Depends(require_read)


# What the databases can hold, so that a larger number is a 422, not a 500: ids are INTEGER
# (32-bit signed on PostgreSQL), offsets 64-bit.
MAX_ID = 2**31 - 1
MAX_OFFSET = 2**63 - 1
VideoId = Annotated[int, Path(ge=1, le=MAX_ID, description="The video's id.")]


def video_row(video_id: VideoId, state: StateDep) -> Video:
    """The row of the path's video (detached from its session), or 404."""
    with Session(state.reader) as session:
        video = session.get(Video, video_id)
        if video is None:
            raise HTTPException(404, f"no video {video_id}")
        session.expunge(video)
        return video


VideoDep = Annotated[Video, Depends(video_row)]
