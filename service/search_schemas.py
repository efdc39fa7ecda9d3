"""The body of POST /search: a sentence or a video, filters, a cursor (``service.schemas``
holds the response bodies)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas import JsonInt, MetaKey, MetaValue, Tag, _request

Timestamp = Annotated[datetime, Field(strict=False)]  # an ISO 8601 text in JSON
_FILTERS = {
    "tags_all": ["pets"],
    "tags_any": ["garden", "beach"],
    "metadata": {"camera": "synthetic"},
    "duration_min_s": 1.0,
    "duration_max_s": 600.0,
    "ingested_after": "2026-11-01T00:00:00Z",
    "ingested_before": "2026-12-01T00:00:00Z",
}


class SearchFilters(BaseModel):
    model_config = _request(_FILTERS)

    tags_all: Annotated[list[Tag], Field(max_length=20)] = Field(
        default=[], description="The video has every one of these tags (all-of)."
    )
    tags_any: Annotated[list[Tag], Field(max_length=20)] = Field(
        default=[], description="The video has at least one of these tags (any-of)."
    )
    metadata: Annotated[dict[MetaKey, MetaValue], Field(max_length=20)] = Field(
        default={}, description="The video's metadata has each of these keys with this value."
    )
    duration_min_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Shortest duration, seconds."
    )
    duration_max_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Longest duration, seconds."
    )
    ingested_after: Timestamp | None = Field(
        default=None, description="Ingested at or after this time (ISO 8601; UTC if no zone)."
    )
    ingested_before: Timestamp | None = Field(
        default=None, description="Ingested before this time (ISO 8601; UTC if no zone)."
    )

    @model_validator(mode="after")
    def _ranges(self) -> SearchFilters:
        lo, hi = self.duration_min_s, self.duration_max_s
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("duration_min_s is above duration_max_s")
        after, before = self.ingested_after, self.ingested_before
        if after is not None and before is not None and as_utc(after) >= as_utc(before):
            raise ValueError("ingested_after is not before ingested_before")
        return self


def as_utc(t: datetime) -> datetime:
    """A time in UTC (one without a zone taken as UTC)."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


class LevelWeights(BaseModel):
    model_config = _request({"event": 1.0, "action": 2.0, "entity": 1.0, "concept": 0.5})

    event: float = Field(default=1.0, ge=0, le=100, description="Global (event) score.")
    action: float = Field(default=1.0, ge=0, le=100, description="Action scores.")
    entity: float = Field(default=1.0, ge=0, le=100, description="Entity scores.")
    concept: float = Field(default=1.0, ge=0, le=100, description="Concept (Jaccard) scores.")


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"query": "a red circle moves left", "top_k": 10},
                {"query": "a red circle moves left", "top_k": 5, "group_by": "video", "moments": 3},
                {"query": "a blue star grows", "top_k": 20, "group_by": "moment"},
                {"query": "a dog runs", "filters": {"tags_all": ["pets"], "duration_max_s": 60}},
                {"query": "a red circle moves left", "cursor": "eyJmIjogIjAx..."},
                {"video_id": 7},
                {"video_id": 7, "start_s": 120.0, "end_s": 130.0, "top_k": 5},
                {"query": "a red circle moves left", "explain": True, "top_k": 3},
                {"query": "a red circle moves left", "weights": {"action": 2, "concept": 0}},
            ]
        },
        strict=True,
        extra="forbid",
    )

    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="A sentence to search for (or give `video_id` instead).",
        examples=["a red circle moves left, then a blue star grows"],
    )
    video_id: JsonInt | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="More like this: an indexed video to search with instead of a sentence "
        "(its stored embeddings are the query; it is never a hit itself).",
    )
    start_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="With `video_id`: from here, s."
    )
    end_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="With `video_id`: up to here, s."
    )
    filters: SearchFilters | None = Field(
        default=None,
        description="Only videos that pass these (all given conditions); the hits are the best "
        "`top_k` of those videos, a full page whenever that many match.",
    )
    cursor: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="The previous page's `next_cursor`, with the same query, filters and "
        "grouping: the next page.",
    )
    top_k: JsonInt = Field(default=10, ge=1, le=100, description="How many hits to return.")
    min_score: float | None = Field(
        default=None, allow_inf_nan=False, description="Drop hits scoring below this."
    )
    group_by: Literal["video", "moment"] = Field(
        default="video",
        description="`video`: the best videos, each with its best moments (a video scores as "
        "its best segment). `moment`: the best moments across the corpus, a video possibly "
        "several times.",
    )
    moments: JsonInt = Field(
        default=3, ge=1, le=10, description="With `group_by` video: moments per hit, at most."
    )

    weights: LevelWeights | None = Field(
        default=None,
        description="Multipliers on the model's own fusion weights per level (1: as trained, "
        "0: off): re-ranks the candidates; a sentence only.",
    )
    explain: bool = Field(
        default=False,
        description="Each hit gets `explain`: the query's phrases and the frames they "
        "attended to (a sentence only).",
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.video_id is None):
            raise ValueError("give either `query` (a sentence) or `video_id` (more like this)")
        if self.video_id is None and (self.start_s is not None or self.end_s is not None):
            raise ValueError("`start_s` and `end_s` go with `video_id`")
        if self.video_id is not None and (self.weights is not None or self.explain):
            raise ValueError("`weights` and `explain` go with a sentence (`query`)")
        if self.start_s is not None and self.end_s is not None and self.start_s > self.end_s:
            raise ValueError("`start_s` is after `end_s`")
        return self
