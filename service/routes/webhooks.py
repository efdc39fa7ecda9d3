"""The webhook deliveries' state: what was sent, what waits for a retry, what failed. Behind
the API key when one is set (an event's payload describes the library)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from db import outbox
from service.deps import MAX_ID, MAX_OFFSET, StateDep
from service.schemas import WebhookDeliveryList, WebhookDeliveryPublic

router = APIRouter()


@router.get(
    "/webhooks/deliveries",
    response_model=WebhookDeliveryList,
    summary="Webhook deliveries, newest first (optionally one video's, or in one state).",
)
async def list_deliveries(
    state: StateDep,
    video_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this video's.")
    ] = None,
    status: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(description="Only these.")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> WebhookDeliveryList:
    rows, total = await run_in_threadpool(
        outbox.deliveries,
        state.reader,
        video_id=video_id,
        status=status,
        limit=limit,
        offset=offset,
    )
    items = [
        WebhookDeliveryPublic(
            id=r.id,
            event=r.event,
            video_id=r.video_id,
            status=r.status,
            attempts=r.attempts,
            next_attempt_at=r.next_attempt_at if r.status == outbox.PENDING else None,
            response_status=r.response_status,
            last_error=r.last_error,
            created_at=r.created_at,
            delivered_at=r.delivered_at,
            payload=r.payload,
        )
        for r in rows
    ]
    return WebhookDeliveryList(items=items, total=total, offset=offset, limit=limit)
