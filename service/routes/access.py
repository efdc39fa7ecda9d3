"""The page's media session: <video> and <img> cannot send X-API-Key, so when reads need the key
the page trades it for a cookie that lets GET requests read (files, thumbnails) for a while."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import MEDIA_COOKIE, MEDIA_COOKIE_MAX_AGE_S, StateDep, media_token

router = APIRouter()  # mounted, behind the key, only when a key is set (service.app)
logout = APIRouter()  # mounted beside it, open: forgetting a cookie needs no key


@router.post(
    "/session",
    status_code=204,
    summary="Trade the API key for a media cookie (HttpOnly, SameSite=Strict) that lets the "
    "browser load files and thumbnails of a private library.",
)
def open_session(request: Request, state: StateDep) -> Response:
    response = Response(status_code=204)
    expires = int(time.time()) + MEDIA_COOKIE_MAX_AGE_S
    response.set_cookie(
        MEDIA_COOKIE,
        media_token(state, expires),
        max_age=MEDIA_COOKIE_MAX_AGE_S,
        path="/videos",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@logout.delete("/session", status_code=204, summary="Forget the media cookie.")
def close_session() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(MEDIA_COOKIE, path="/videos", httponly=True, samesite="strict")
    return response
