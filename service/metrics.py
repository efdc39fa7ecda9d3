"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine

from indexer import queue


class _QueueCollector:
    """Videos per status and queue depth, read from the database at scrape time."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self.engine = engine

    def collect(self):  # type: ignore[no-untyped-def]
        counts = queue.counts(self.engine())
        videos = GaugeMetricFamily("hanet_videos", "Videos per indexing status.",
                                   labels=["status"])  # fmt: skip
        for status, n in counts.items():
            videos.add_metric([status], n)
        yield videos
        yield GaugeMetricFamily("hanet_indexed_videos", "Videos searchable now.",
                                value=counts["indexed"])  # fmt: skip
        yield GaugeMetricFamily("hanet_queue_depth", "Videos waiting or being indexed.",
                                value=counts["pending"] + counts["processing"])  # fmt: skip


def install_metrics(app: FastAPI, engine: Callable[[], Engine]) -> None:
    registry = CollectorRegistry()
    latency = Histogram("hanet_request_seconds", "HTTP request latency.",
                        ["method", "route", "status"], registry=registry,
                        buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))  # fmt: skip
    registry.register(_QueueCollector(engine))

    @app.middleware("http")
    async def _time_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        latency.labels(request.method, route, str(response.status_code)).observe(
            time.perf_counter() - start
        )
        return response

    @app.get("/metrics", include_in_schema=True, summary="Prometheus metrics.")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
