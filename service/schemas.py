"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class VideoByPath(BaseModel):
    path: str = Field(min_length=1, max_length=4096,
                      description="A file under the configured media root.",
                      examples=["clips/dog.mp4"])  # fmt: skip
    title: str | None = Field(default=None, max_length=500, description="Optional title.")


class ConceptPublic(BaseModel):
    name: str = Field(description="Concept (a verb for actions, a noun for entities).")
    probability: float = Field(description="The model's probability that the video shows it.")


class ConceptsPublic(BaseModel):
    actions: list[ConceptPublic] = Field(description="Most probable action concepts.")
    entities: list[ConceptPublic] = Field(description="Most probable entity concepts.")


class VideoPublic(BaseModel):
    id: int = Field(description="Video id.")
    status: str = Field(description="pending, processing, indexed or failed.")
    title: str | None = Field(description="Title given at ingest.")
    failure_reason: str | None = Field(description="Why indexing failed, when it did.")
    duration_s: float | None = Field(description="Duration in seconds, once decoded.")
    concepts: ConceptsPublic | None = Field(
        default=None, description="When indexed: the actions and entities the model sees."
    )


class VideoList(BaseModel):
    items: list[VideoPublic] = Field(description="Videos, newest first.")
    total: int = Field(description="All videos.")
    offset: int = Field(description="Offset of the first item.")
    limit: int = Field(description="Page size asked for.")


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=1000, description="A sentence to search for.",
                       examples=["a red circle moves left, then a blue star grows"])  # fmt: skip
    top_k: int = Field(default=10, ge=1, le=100, description="How many hits to return.")
    min_score: float | None = Field(default=None, description="Drop hits scoring below this.")


class Moment(BaseModel):
    start_s: float = Field(description="Start of the matched action segment, seconds.")
    end_s: float = Field(description="End of the matched action segment, seconds.")


class SearchHit(BaseModel):
    video_id: int = Field(description="Video id.")
    title: str | None = Field(description="Video title.")
    score: float = Field(description="HANet's fused score (higher is better).")
    scores: dict[str, float] = Field(description="Every alignment level's score.")
    moment: Moment = Field(description="Where in the video the sentence matched.")
    concepts: ConceptsPublic | None = Field(description="Concepts the model sees in the video.")


class SearchResponse(BaseModel):
    hits: list[SearchHit] = Field(description="Best first.")
    took_ms: float = Field(description="Server time for the search, milliseconds.")
