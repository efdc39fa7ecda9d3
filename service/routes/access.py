"""The page's media session: <video> and <img> cannot send X-API-Key, so when reads need the key
the page trades it for a cookie that lets GET requests read (files, thumbnails) for a while."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.deps import (
    MEDIA_COOKIE,
    MEDIA_COOKIE_MAX_AGE_S,
    KeyDep,
    StateDep,
    media_token,
)

router = APIRouter()


@router.post(
    "/session",
    status_code=204,
    summary="Trade the API key for a media cookie (HttpOnly, SameSite=Strict) that lets the "
    "browser load files and thumbnails of a private library; none is needed without a key.",
    responses={401: {"description": "Missing or wrong X-API-Key."}},
)
def open_session(request: Request, state: StateDep, _key: KeyDep) -> Response:
    response = Response(status_code=204)
    if state.settings.api_key is None:
        return response  # nothing is private: no cookie to give
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


@router.delete("/session", status_code=204, summary="Forget the media cookie.")
def close_session() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(MEDIA_COOKIE, path="/videos", httponly=True, samesite="strict")
    return response
