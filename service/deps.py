"""The routes' dependencies, as ``Annotated`` aliases: the shared state, the API key check,
one video's row."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request
from sqlalchemy.orm import Session

from db.schema import Video
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.hanet


StateDep = Annotated[ServiceState, Depends(get_state)]


def require_key(state: StateDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Endpoints that change data need the API key, when one is configured."""
    expected = state.settings.api_key
    if expected is None:
        return
    given = (x_api_key or "").encode()
    if not hmac.compare_digest(given, expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key")


KeyDep = Annotated[None, Depends(require_key)]


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
