"""POST /search: a sentence (or a video: more like this) in, the best videos and their moments
out, optionally among the videos that pass filters, a page at a time (``service.paging``).
Searches that arrive while one runs are served together in the next batch (service.batching);
one that waits too long for its turn is answered 503 with Retry-After."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from db.connect import HitRow, HitRows
from index.reader import BuildError
from model.explain import weighted_fusion
from service import paging
from service.batching import Overloaded
from service.deps import StateDep
from service.explain import explain_units
from service.filters import VideoFilter, matching_videos
from service.images import MAX_IMAGE_BYTES, NotAnImage, decode_image
from service.paging import BadCursor, SearchCursor
from service.schemas import (
    Moment,
    MomentHit,
    SearchHit,
    SearchResponse,
    Span,
    stored_concepts,
)
from service.search import Hit, Like, Query
from service.search_schemas import SearchRequest, as_utc
from service.similar import EmptyStretch, UnknownVideo, image_vectors, ranked, similar
from service.state import ServiceState

router = APIRouter()

RESPONSES = {
    400: {"description": "A cursor this service did not make, or made for another query."},
    404: {"description": "More like this: the video is not in the index."},
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
    """A search waiting for its batch: the request, its query (as deep as its page needs),
    its cursor and fingerprint, and when it arrived (for ``took_ms``)."""

    state: ServiceState
    body: SearchRequest
    arrived: float  # time.perf_counter()
    query: Query | None = None
    cursor: SearchCursor | None = None
    fingerprint: str = ""


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Search with a sentence, or for more like a video.",
    responses=RESPONSES,
)
async def search_route(body: SearchRequest, state: StateDep) -> Response:
    arrived = time.perf_counter()
    where = _filter(body)
    fp = paging.fingerprint(
        body.query,
        body.video_id,
        body.start_s,
        body.end_s,
        where.key(),
        body.group_by,
        body.moments,
        body.min_score,
        body.weights,
    )
    fusion = None
    if body.weights is not None:
        try:
            fusion = weighted_fusion(state.searcher.model.cfg.fusion, body.weights.model_dump())
        except ValueError as exc:
            raise HTTPException(422, f"weights: {exc}") from exc
    try:
        cursor = paging.decode_search_cursor(body.cursor, fp) if body.cursor else None
    except BadCursor as exc:
        raise HTTPException(400, str(exc)) from exc
    videos = await run_in_threadpool(matching_videos, state.reader, where) if where else None
    query = replace(_query(body, paging.depth(cursor, body.top_k), videos), fusion=fusion)
    pending = PendingSearch(state, body, arrived, query, cursor, fp)
    result = await _submit(state, serve_searches, pending)
    # serialised by pydantic at once: FastAPI would validate the model again first
    return Response(result.model_dump_json(), media_type="application/json")


async def _submit(state: ServiceState, serve, pending):
    """``pending`` served by ``serve`` in a batch on the search thread (service.state.open_state
    says why), never on the event loop; 503 with Retry-After when it waited too long."""
    try:
        return await state.searches.submit(serve, pending)
    except Overloaded as exc:
        raise HTTPException(
            503,
            f"the server is busy: this search {exc}; retry in {exc.retry_after_s} s",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from exc


def serve_searches(batch: list[PendingSearch]) -> list[SearchResponse | HTTPException]:
    """A batch of searches, on the search thread: 409 for each when the published index cannot
    serve this model. Hits are hydrated from their rows (one lookup for the batch); those of
    videos deleted since the index was read are dropped. ``took_ms``: from the request's
    arrival (its wait for the batch included) to its answer."""
    state = batch[0].state
    try:
        found = _search(state, [p.query for p in batch])
    except BuildError as exc:
        return [HTTPException(409, str(exc)) for _ in batch]
    try:
        pages = [
            hits if isinstance(hits, HTTPException) else _page(state, p, hits)
            for p, hits in zip(batch, found, strict=True)
        ]
    except BuildError as exc:
        return [HTTPException(409, str(exc)) for _ in batch]
    shown = {h.video_id for page in pages if isinstance(page, tuple) for h in page[0]}
    rows = _rows(state.hit_rows, sorted(shown))
    reasons = [
        _explain(state, p.body.query, page[0])
        if p.body.explain and isinstance(page, tuple)
        else None
        for p, page in zip(batch, pages, strict=True)
    ]
    done = time.perf_counter()
    return [
        page
        if isinstance(page, HTTPException)
        else SearchResponse(
            hits=_hydrate(page[0], rows, why),
            took_ms=round((done - p.arrived) * 1000, 2),
            next_cursor=page[1],
        )
        for p, page, why in zip(batch, pages, reasons, strict=True)
    ]


def _explain(state: ServiceState, sentence: str, hits: list[Hit]) -> list:
    """Each hit's phrase reasons at its best moment's segment (None where the segment left
    the index since the search read it)."""
    build = state.searcher.index.current()
    units = [hit.moments[0].unit if hit.moments else -1 for hit in hits]
    if build is None:
        return [None] * len(hits)
    kept = [u for u, known in zip(units, build.known(np.asarray(units)), strict=True) if known]
    found = explain_units(state.searcher.model, build, sentence, kept)
    reasons = dict(zip(kept, found, strict=True))
    return [reasons.get(u) for u in units]


def _page(state: ServiceState, p: PendingSearch, hits: list[Hit]) -> tuple[list[Hit], str | None]:
    """This page's hits and the next cursor. Where videos ingested since the cursor was made
    rank above it and fill the search's depth, the search goes deeper (doubling, up to
    ``paging.MAX_DEPTH``) until the page is full or the hits run out."""
    query = p.query
    while True:
        kept = [h for h in hits if p.body.min_score is None or h.score >= p.body.min_score]
        chosen, cursor = paging.page(kept, p.cursor, p.body.top_k, p.fingerprint)
        full = len(hits) >= query.top_k  # there may be more beyond this depth
        if cursor or not full or p.cursor is None or query.top_k >= paging.MAX_DEPTH:
            return chosen, cursor
        query = replace(query, top_k=min(2 * query.top_k, paging.MAX_DEPTH))
        hits = _search(state, [query])[0]


def _search(state: ServiceState, queries: list[Query]) -> list[list[Hit] | HTTPException]:
    """The sentences' hits in one batch; each "more like this" on its own (its video may be
    unknown: a 404 for it alone)."""
    texts = [i for i, q in enumerate(queries) if q.like is None]
    out: list[list[Hit] | HTTPException] = [[] for _ in queries]
    found = state.searcher.search_many([queries[i] for i in texts]) if texts else []
    for i, hits in zip(texts, found, strict=True):
        out[i] = hits
    for i, q in enumerate(queries):
        if q.like is None:
            continue
        try:
            build = state.searcher.index.current()
            if build is None:
                raise UnknownVideo(f"video {q.like.video_id} is not in the index (none yet)")
            out[i] = similar(build, q, state.searcher.candidates)
        except UnknownVideo as exc:
            out[i] = HTTPException(404, str(exc))
        except EmptyStretch as exc:
            out[i] = HTTPException(422, str(exc))
    return out


def _filter(body: SearchRequest) -> VideoFilter:
    f = body.filters
    if f is None:
        return VideoFilter()
    return VideoFilter(
        tags_all=tuple(sorted(set(f.tags_all))),
        tags_any=tuple(sorted(set(f.tags_any))),
        metadata=tuple(sorted(f.metadata.items())),
        duration_min_s=f.duration_min_s,
        duration_max_s=f.duration_max_s,
        ingested_after=as_utc(f.ingested_after) if f.ingested_after else None,
        ingested_before=as_utc(f.ingested_before) if f.ingested_before else None,
    )


def _query(body: SearchRequest, top_k: int, videos) -> Query:
    like = None if body.video_id is None else Like(body.video_id, body.start_s, body.end_s)
    return Query(body.query or "", top_k, body.group_by, body.moments, videos=videos, like=like)


ROWS_PER_LOOKUP = 1000  # bound parameters per query: well under SQLite's and PostgreSQL's limits


IMAGE_RESPONSES = {
    409: RESPONSES[409],
    413: {"description": f"An image file over {MAX_IMAGE_BYTES:,} bytes."},
    415: {
        "description": "A file that is not an image this server can decode (JPEG, PNG, WebP, "
        "GIF, BMP, TIFF...), an empty file, or one with too many pixels: the detail says why."
    },
    503: RESPONSES[503],
}


@dataclass(frozen=True)
class PendingImage:
    state: ServiceState
    image: np.ndarray  # (H, W, 3) uint8
    query: Query
    arrived: float


@router.post(
    "/search/image",
    response_model=SearchResponse,
    summary="Search with an image.",
    description="The image goes through the model's video branch as a one-frame video (the "
    "CLIP image tower, then HANet's heads); its event vector and key segments are the query, "
    "as for more like this. One page: `next_cursor` is always null.",
    responses=IMAGE_RESPONSES,
)
async def search_image_route(
    state: StateDep,
    file: Annotated[UploadFile, File(description="An image (JPEG, PNG, WebP...).")],
    top_k: Annotated[int, Form(ge=1, le=100, description="How many hits.")] = 10,
    group_by: Annotated[
        Literal["video", "moment"], Form(description="`video` or `moment`, as for /search.")
    ] = "video",
    moments: Annotated[int, Form(ge=1, le=10, description="Moments per video hit.")] = 3,
) -> Response:
    arrived = time.perf_counter()
    data = await file.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise HTTPException(413, f"the image is over {MAX_IMAGE_BYTES:,} bytes")
    try:
        image = await run_in_threadpool(decode_image, data)
    except NotAnImage as exc:
        raise HTTPException(415, str(exc)) from exc
    pending = PendingImage(state, image, Query("", top_k, group_by, moments), arrived)
    result = await _submit(state, serve_images, pending)
    if isinstance(result, HTTPException):
        raise result
    return Response(result.model_dump_json(), media_type="application/json")


def serve_images(batch: list[PendingImage]) -> list[SearchResponse | HTTPException]:
    """Image searches, on the search thread, one by one."""
    state = batch[0].state
    try:
        build = state.searcher.index.current()
    except BuildError as exc:
        return [HTTPException(409, str(exc)) for _ in batch]
    out: list[SearchResponse | HTTPException] = []
    for p in batch:
        hits = []
        if build is not None:
            vectors = image_vectors(state.searcher.model, p.image)
            hits = ranked(build, vectors, p.query, state.searcher.candidates)
        rows = _rows(state.hit_rows, sorted({h.video_id for h in hits}))
        took = round((time.perf_counter() - p.arrived) * 1000, 2)
        out.append(SearchResponse(hits=_hydrate(hits, rows), took_ms=took))
    return out


def _rows(hit_rows: HitRows, video_ids: list[int]) -> dict[int, HitRow]:
    """The hits' rows, a batch's worth (up to 1024 searches of 100 hits) in few lookups."""
    rows: dict[int, HitRow] = {}
    for i in range(0, len(video_ids), ROWS_PER_LOOKUP):
        rows.update(hit_rows(video_ids[i : i + ROWS_PER_LOOKUP]))
    return rows


def _hydrate(
    found: list[Hit], rows: dict[int, HitRow], reasons: list | None = None
) -> list[SearchHit]:
    reasons = reasons or [None] * len(found)
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
            explain=why,
        )
        for h, why in zip(found, reasons, strict=True)
        if h.video_id in rows
    ]
