"""POST /search: a sentence in, the best videos and their moments out. Searches that arrive
while one runs are served together in the next batch (service.batching); one that waits too
long for its turn is answered 503 with Retry-After."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from db.connect import HitRow, HitRows
from index.reader import BuildError
from service.batching import Overloaded
from service.deps import StateDep
from service.schemas import (
    Moment,
    MomentHit,
    SearchHit,
    SearchRequest,
    SearchResponse,
    Span,
    stored_concepts,
)
from service.search import Hit, Query
from service.state import ServiceState

router = APIRouter()

RESPONSES = {
    409: {"description": "The published index was built by another model than the served one."},
    503: {
        "description": "Too busy: the search waited longer than HANET_SEARCH_WAIT_S for its "
        "turn. Retry after the seconds in Retry-After.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            }
        },
    },
}


@dataclass(frozen=True)
class PendingSearch:
    """A search waiting for its batch: the request, and when it arrived (for ``took_ms``)."""

    state: ServiceState
    body: SearchRequest
    arrived: float  # time.perf_counter()


@router.post(
    "/search", response_model=SearchResponse, summary="Search with a sentence.", responses=RESPONSES
)
async def search_route(body: SearchRequest, state: StateDep) -> Response:
    pending = PendingSearch(state, body, time.perf_counter())
    try:
        # on the search thread (service.state.open_state says why), never on the event loop
        result = await state.searches.submit(serve_searches, pending)
    except Overloaded as exc:
        raise HTTPException(
            503,
            f"the server is busy: this search {exc}; retry in {exc.retry_after_s} s",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from exc
    # serialised by pydantic at once: FastAPI would validate the model again first
    return Response(result.model_dump_json(), media_type="application/json")


def serve_searches(batch: list[PendingSearch]) -> list[SearchResponse | HTTPException]:
    """A batch of searches, on the search thread: 409 for each when the published index cannot
    serve this model. Hits are hydrated from their rows (one lookup for the batch); those of
    videos deleted since the index was read are dropped. ``took_ms``: from the request's
    arrival (its wait for the batch included) to its answer."""
    state = batch[0].state
    try:
        found = state.searcher.search_many([_query(p.body) for p in batch])
    except BuildError as exc:
        return [HTTPException(409, str(exc)) for _ in batch]
    found = [
        [h for h in hits if p.body.min_score is None or h.score >= p.body.min_score]
        for p, hits in zip(batch, found, strict=True)
    ]
    rows = _rows(state.hit_rows, sorted({h.video_id for hits in found for h in hits}))
    done = time.perf_counter()
    return [
        SearchResponse(hits=_hydrate(hits, rows), took_ms=round((done - p.arrived) * 1000, 2))
        for p, hits in zip(batch, found, strict=True)
    ]


def _query(body: SearchRequest) -> Query:
    return Query(body.query, body.top_k, body.group_by, body.moments)


ROWS_PER_LOOKUP = 1000  # bound parameters per query: well under SQLite's and PostgreSQL's limits


def _rows(hit_rows: HitRows, video_ids: list[int]) -> dict[int, HitRow]:
    """The hits' rows, a batch's worth (up to 1024 searches of 100 hits) in few lookups."""
    rows: dict[int, HitRow] = {}
    for i in range(0, len(video_ids), ROWS_PER_LOOKUP):
        rows.update(hit_rows(video_ids[i : i + ROWS_PER_LOOKUP]))
    return rows


def _hydrate(found: list[Hit], rows: dict[int, HitRow]) -> list[SearchHit]:
    return [
        SearchHit(
            video_id=h.video_id,
            title=rows[h.video_id].title,
            score=round(h.score, 4),
            scores=h.scores,
            moment=Moment(start_s=h.start_s, end_s=h.end_s),
            moments=[
                MomentHit(
                    start_s=m.start_s,
                    end_s=m.end_s,
                    score=round(m.score, 4),
                    scores=m.scores,
                    segment=Span(start_s=m.segment_start_s, end_s=m.segment_end_s),
                )
                for m in h.moments
            ],
            duration_s=rows[h.video_id].duration_s,
            # the video's own, as on its page (the build holds its rows rounded to float16)
            concepts=stored_concepts(rows[h.video_id].status, rows[h.video_id].concepts),
            tags=rows[h.video_id].tags or [],
            metadata=rows[h.video_id].meta or {},
        )
        for h in found
        if h.video_id in rows
    ]
