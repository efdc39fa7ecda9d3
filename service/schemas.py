"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from db.schema import VideoStatus


def _example(example: dict) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


def _request(example: dict) -> ConfigDict:
    """A request body's config: types as the schema says them (no `true` for an integer, no
    `"0.5"` for a number) and no unknown keys (a misspelt field is an error, not a default)."""
    return ConfigDict(json_schema_extra={"examples": [example]}, strict=True, extra="forbid")


def _whole_number(value: object) -> object:
    """JSON Schema counts 10.0 as an integer; strict pydantic would not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_whole_number)]  # 10 or 10.0; never true or "10"
# A video's title: what a database text column holds (PostgreSQL refuses NUL characters)
TITLE_MAX_CHARS = 500
Title = Annotated[str, Field(max_length=TITLE_MAX_CHARS, pattern=r"^[^\x00]*$")]
# Labels and key/value metadata: short texts a database column holds, in bounded numbers
Tag = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00]*$")]
MetaKey = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00]*$")]
MetaValue = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]
Tags = Annotated[list[Tag], Field(max_length=50)]
Metadata = Annotated[dict[MetaKey, MetaValue], Field(max_length=50)]
VideoUrl = Annotated[
    str, Field(min_length=8, max_length=2000, pattern=r"^[hH][tT][tT][pP][sS]?://\S+$")
]

_CONCEPTS = {
    "actions": [{"name": "move", "probability": 0.91}],
    "entities": [{"name": "circle", "probability": 0.88}],
}
_TAGS = ["demo", "shapes"]
_METADATA = {"camera": "synthetic", "licence": "CC0"}
_VIDEO = {
    "id": 7,
    "status": "indexed",
    "title": "red circle",
    "source_url": None,
    "tags": _TAGS,
    "metadata": _METADATA,
    "failure_reason": None,
    "duration_s": 312.5,
    "progress": 1.0,
    "segments": 24,
    "concepts": _CONCEPTS,
}
_SCORES = {"global": 0.71, "local_action": 0.88, "fused": 0.83}
_MOMENT = {
    "start_s": 124.25,
    "end_s": 126.0,
    "score": 0.83,
    "scores": _SCORES,
    "segment": {"start_s": 120.0, "end_s": 130.0},
}
_HIT = {
    "video_id": 7,
    "title": "red circle",
    "score": 0.83,
    "scores": _SCORES,
    "moment": {"start_s": 124.25, "end_s": 126.0},
    "duration_s": 312.5,
    "moments": [
        _MOMENT,
        {
            **_MOMENT,
            "start_s": 41.5,
            "end_s": 43.0,
            "score": 0.61,
            "segment": {"start_s": 38.0, "end_s": 48.0},
        },
    ],
    "concepts": _CONCEPTS,
}


class VideoByPath(BaseModel):
    model_config = _request({"path": "clips/dog.mp4", "title": "the dog"})

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="A file under the configured media root.",
        examples=["clips/dog.mp4"],
    )
    title: Title | None = Field(default=None, description="Optional title.")
    tags: Tags | None = Field(default=None, description="Optional labels (50 at most).")
    metadata: Metadata | None = Field(
        default=None, description="Optional key/value texts (50 at most)."
    )


class VideoByUrl(BaseModel):
    model_config = _request(
        {
            "url": "https://media.example.com/clips/dog.mp4",
            "title": "the dog",
            "tags": ["pets"],
            "metadata": {"source": "example"},
        }
    )

    url: VideoUrl = Field(
        description="An http(s) URL the indexer worker downloads the video from (within the "
        "upload size limit; non-public addresses are refused unless allowed by the settings).",
        examples=["https://media.example.com/clips/dog.mp4"],
    )
    title: Title | None = Field(default=None, description="Optional title.")
    tags: Tags | None = Field(default=None, description="Optional labels (50 at most).")
    metadata: Metadata | None = Field(
        default=None, description="Optional key/value texts (50 at most)."
    )


class VideoPatch(BaseModel):
    model_config = _request({"title": "the dog, again", "tags": ["pets", "garden"]})

    title: Title | None = Field(default=None, description="New title (null removes it).")
    tags: Tags | None = Field(default=None, description="New labels, replacing the old ones.")
    metadata: Metadata | None = Field(
        default=None, description="New key/value texts, replacing the old ones."
    )


class ConceptPublic(BaseModel):
    model_config = _example({"name": "move", "probability": 0.91})

    name: str = Field(description="Concept (a verb for actions, a noun for entities).")
    probability: float = Field(description="The model's probability that the video shows it.")


class ConceptsPublic(BaseModel):
    model_config = _example(_CONCEPTS)

    actions: list[ConceptPublic] = Field(description="Most probable action concepts.")
    entities: list[ConceptPublic] = Field(description="Most probable entity concepts.")


def stored_concepts(status: str, concepts: dict | None) -> ConceptsPublic | None:
    """A video's concepts as the indexer stored them on its row (``Video.concepts``), shown
    while the video is indexed."""
    if status != VideoStatus.INDEXED.value or concepts is None:
        return None
    return ConceptsPublic.model_validate(concepts)


class VideoPublic(BaseModel):
    model_config = _example(_VIDEO)

    id: int = Field(description="Video id.")
    status: str = Field(description="pending, processing, indexed or failed.")
    title: str | None = Field(description="Title given at ingest.")
    source_url: str | None = Field(
        default=None, description="The URL it was ingested from (ingest by URL only)."
    )
    tags: list[str] = Field(default=[], description="Labels given at ingest or by PATCH.")
    metadata: dict[str, str] = Field(
        default={}, description="Key/value texts given at ingest or by PATCH."
    )
    failure_reason: str | None = Field(description="Why indexing failed, when it did.")
    duration_s: float | None = Field(description="Duration in seconds, once decoded.")
    progress: float | None = Field(
        default=None,
        description="Share of the video indexed, 0 to 1: while processing, how far the indexer "
        "has read (a long video is read in chunks of segments); 1 once indexed.",
    )
    segments: int | None = Field(
        default=None, description="Once indexed: how many segments (index units) it has."
    )
    concepts: ConceptsPublic | None = Field(
        default=None, description="When indexed: the actions and entities the model sees."
    )


class VideoList(BaseModel):
    model_config = _example(
        {"items": [_VIDEO], "total": 1, "offset": 0, "limit": 50, "next_cursor": None}
    )

    items: list[VideoPublic] = Field(description="Videos, newest first.")
    total: int = Field(description="All videos.")
    offset: int = Field(description="Offset of the first item (0 when paging by cursor).")
    limit: int = Field(description="Page size asked for.")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page (older videos); null on the last "
        "page. Keyset on the id: videos ingested meanwhile never shift the pages.",
    )


class Moment(BaseModel):
    model_config = _example({"start_s": 0.25, "end_s": 1.25})

    start_s: float = Field(
        description="Start of the matched moment, seconds: the stretch of video that the "
        "segment's most relevant sampled frames stand for."
    )
    end_s: float = Field(description="End of the matched moment, seconds.")


class Span(BaseModel):
    model_config = _example({"start_s": 120.0, "end_s": 130.0})

    start_s: float = Field(description="Start, seconds.")
    end_s: float = Field(description="End, seconds.")


class MomentHit(BaseModel):
    model_config = _example(_MOMENT)

    start_s: float = Field(description="Start of the matched action segment, seconds.")
    end_s: float = Field(description="End of the matched action segment, seconds.")
    score: float = Field(description="HANet's fused score of the segment it lies in.")
    scores: dict[str, float] = Field(description="Every alignment level's score there.")
    segment: Span = Field(description="The segment (index unit) the moment was found in.")


_REASON = {
    "phrase": "a red circle",
    "kind": "entity",
    "role": "ARG0",
    "score": 0.41,
    "frames": [{"t_s": 3.5, "weight": 0.52}, {"t_s": 4.0, "weight": 0.31}],
    "segment": None,
    "segment_score": 0.38,
}


class FrameWeight(BaseModel):
    t_s: float = Field(description="Time of a sampled frame, seconds.")
    weight: float = Field(description="The phrase's attention on it (a phrase's sum to 1).")


class PhraseReason(BaseModel):
    model_config = _example(_REASON)

    phrase: str = Field(description="A phrase of the query, as the parser cut it.")
    kind: str = Field(description="`action` (a verb phrase) or `entity` (an argument).")
    role: str = Field(description="Its semantic role (V, ARG0, ARG1, ARGM-LOC, ...).")
    score: float = Field(
        description="Cosine of the frames it attended to with the phrase: its part of the "
        "individual level's score (that score is the mean over the level's phrases)."
    )
    frames: list[FrameWeight] = Field(description="Frames it attended to most, strongest first.")
    segment: Span | None = Field(
        description="Action phrases: the key action segment its local attention weighed most."
    )
    segment_score: float = Field(description="Its cosine at the local level (key segments).")


class SearchHit(BaseModel):
    model_config = _example(_HIT)

    video_id: int = Field(description="Video id.")
    title: str | None = Field(description="Video title.")
    score: float = Field(description="HANet's fused score (higher is better).")
    scores: dict[str, float] = Field(description="Every alignment level's score.")
    moment: Moment = Field(description="Where in the video the sentence matched best.")
    moments: list[MomentHit] = Field(
        description="The video's best moments, best first (one with `group_by` moment)."
    )
    duration_s: float | None = Field(description="The video's duration, seconds.")
    concepts: ConceptsPublic | None = Field(description="Concepts the model sees in the video.")
    tags: list[str] = Field(default=[], description="The video's tags (ingest or PATCH).")
    metadata: dict[str, str] = Field(default={}, description="The video's key/value metadata.")
    explain: list[PhraseReason] | None = Field(
        default=None,
        description="With `explain`: each phrase of the query and the frames of the best "
        "moment's segment it attended to, from HANet's own cross-attention.",
    )


class SearchResponse(BaseModel):
    model_config = _example({"hits": [_HIT], "took_ms": 14.2, "next_cursor": "eyJmIjogIjAx..."})

    hits: list[SearchHit] = Field(description="Best first.")
    next_cursor: str | None = Field(
        default=None,
        description="Send as `cursor` with the same request for the next page; null on the "
        "last page. Hits never repeat along a chain of cursors, even while videos are ingested "
        "(docs/integrations.md says exactly what stays stable).",
    )
    took_ms: float = Field(
        description="Server time from the request's arrival to its answer (its wait for a "
        "batch included), milliseconds."
    )


_DELIVERY = {
    "id": 42,
    "event": "video.indexed",
    "video_id": 7,
    "status": "pending",
    "attempts": 2,
    "next_attempt_at": "2026-12-01T10:00:40Z",
    "response_status": 503,
    "last_error": "HTTP 503 Service Unavailable",
    "created_at": "2026-12-01T10:00:00Z",
    "delivered_at": None,
    "payload": {"event": "video.indexed", "video": {"id": 7, "status": "indexed"}},
}


class WebhookDeliveryPublic(BaseModel):
    model_config = _example(_DELIVERY)

    id: int = Field(description="Delivery id (the X-Hanet-Delivery header).")
    event: str = Field(description="video.indexed or video.failed.")
    video_id: int = Field(description="The video the event is about.")
    status: str = Field(description="pending (due, or waiting to retry), delivered or failed.")
    attempts: int = Field(description="POSTs made so far.")
    next_attempt_at: datetime | None = Field(description="While pending: when it is due.")
    response_status: int | None = Field(description="The last attempt's HTTP status, if any.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    created_at: datetime = Field(description="When the event happened.")
    delivered_at: datetime | None = Field(description="When it was delivered.")
    payload: dict = Field(description="The JSON body POSTed.")


class WebhookDeliveryList(BaseModel):
    model_config = _example({"items": [_DELIVERY], "total": 1, "offset": 0, "limit": 50})

    items: list[WebhookDeliveryPublic] = Field(description="Deliveries, newest first.")
    total: int = Field(description="Deliveries matching the filters.")
    offset: int = Field(description="Offset of the first item.")
    limit: int = Field(description="Page size asked for.")
