"""POST /search: a sentence in, the best videos and their moments out."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from index.reader import BuildError
from service.deps import StateDep
from service.schemas import Moment, SearchHit, SearchRequest, SearchResponse, stored_concepts
from service.state import ServiceState

router = APIRouter()


@router.post("/search", response_model=SearchResponse, summary="Search with a sentence.")
async def search_route(body: SearchRequest, state: StateDep) -> Response:
    loop = asyncio.get_running_loop()
    # on the search thread (service.state.open_state says why), never on the event loop
    result = await loop.run_in_executor(state.torch_thread, run_search, state, body)
    # serialised by pydantic at once: FastAPI would validate the model again first
    return Response(result.model_dump_json(), media_type="application/json")


def run_search(state: ServiceState, body: SearchRequest) -> SearchResponse:
    """The search itself, on the search thread: 409 when the published index cannot serve
    this model. Hits are hydrated from their rows; those of videos deleted since the index was
    read are dropped."""
    start = time.perf_counter()
    try:
        found = state.searcher.search(body.query, body.top_k)
    except BuildError as exc:
        raise HTTPException(409, str(exc)) from exc
    if body.min_score is not None:
        found = [h for h in found if h.score >= body.min_score]
    rows = state.hit_rows([h.video_id for h in found])
    hits = [
        SearchHit(
            video_id=h.video_id,
            title=rows[h.video_id].title,
            score=round(h.score, 4),
            scores=h.scores,
            moment=Moment(start_s=h.start_s, end_s=h.end_s),
            # the video's own, as on its page (the build holds its rows rounded to float16)
            concepts=stored_concepts(rows[h.video_id].status, rows[h.video_id].concepts),
        )
        for h in found
        if h.video_id in rows
    ]
    return SearchResponse(hits=hits, took_ms=round((time.perf_counter() - start) * 1000, 2))
