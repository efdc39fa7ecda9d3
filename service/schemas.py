"""Request and response bodies of the HTTP API."""

from __future__ import annotations

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

_CONCEPTS = {
    "actions": [{"name": "move", "probability": 0.91}],
    "entities": [{"name": "circle", "probability": 0.88}],
}
_VIDEO = {
    "id": 7,
    "status": "indexed",
    "title": "red circle",
    "failure_reason": None,
    "duration_s": 2.0,
    "concepts": _CONCEPTS,
}
_HIT = {
    "video_id": 7,
    "title": "red circle",
    "score": 0.83,
    "scores": {"global": 0.71, "local_action": 0.88, "fused": 0.83},
    "moment": {"start_s": 0.25, "end_s": 1.25},
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
    failure_reason: str | None = Field(description="Why indexing failed, when it did.")
    duration_s: float | None = Field(description="Duration in seconds, once decoded.")
    concepts: ConceptsPublic | None = Field(
        default=None, description="When indexed: the actions and entities the model sees."
    )


class VideoList(BaseModel):
    model_config = _example({"items": [_VIDEO], "total": 1, "offset": 0, "limit": 50})

    items: list[VideoPublic] = Field(description="Videos, newest first.")
    total: int = Field(description="All videos.")
    offset: int = Field(description="Offset of the first item.")
    limit: int = Field(description="Page size asked for.")


class SearchRequest(BaseModel):
    model_config = _request({"query": "a red circle moves left", "top_k": 10})

    query: str = Field(
        min_length=1,
        max_length=1000,
        description="A sentence to search for.",
        examples=["a red circle moves left, then a blue star grows"],
    )
    top_k: JsonInt = Field(default=10, ge=1, le=100, description="How many hits to return.")
    min_score: float | None = Field(
        default=None, allow_inf_nan=False, description="Drop hits scoring below this."
    )


class Moment(BaseModel):
    model_config = _example({"start_s": 0.25, "end_s": 1.25})

    start_s: float = Field(
        description="Start of the matched action segment, seconds: the "
        "stretch of video its sampled frames stand for."
    )
    end_s: float = Field(description="End of the matched action segment, seconds.")


class SearchHit(BaseModel):
    model_config = _example(_HIT)

    video_id: int = Field(description="Video id.")
    title: str | None = Field(description="Video title.")
    score: float = Field(description="HANet's fused score (higher is better).")
    scores: dict[str, float] = Field(description="Every alignment level's score.")
    moment: Moment = Field(description="Where in the video the sentence matched.")
    concepts: ConceptsPublic | None = Field(description="Concepts the model sees in the video.")


class SearchResponse(BaseModel):
    model_config = _example({"hits": [_HIT], "took_ms": 14.2})

    hits: list[SearchHit] = Field(description="Best first.")
    took_ms: float = Field(
        description="Server time from the request's arrival to its answer (its wait for a "
        "batch included), milliseconds."
    )
