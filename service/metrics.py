"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Response, params
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import queue
from service.batching import BatchStats

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # up to search_batch_max's limit


class _QueueCollector:
    """Videos per status and queue depth, read from the database at scrape time."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self.engine = engine

    def collect(self):
        counts = queue.counts(self.engine())
        videos = GaugeMetricFamily("hanet_videos", "Videos per indexing status.", labels=["status"])
        for status, n in counts.items():
            videos.add_metric([status], n)
        yield videos
        yield GaugeMetricFamily(
            "hanet_indexed_videos", "Videos searchable now.", value=counts["indexed"]
        )
        yield GaugeMetricFamily(
            "hanet_queue_depth",
            "Videos waiting or being indexed.",
            value=counts["pending"] + counts["processing"],
        )


class _BatchCollector:
    """The search queue's batches (service.batching), read from its counts at scrape time:
    how many searches went together, how many were refused for waiting too long, how many
    wait now. Nothing before the app's state exists."""

    def __init__(self, stats: Callable[[], BatchStats | None]) -> None:
        self.stats = stats

    def collect(self):
        stats = self.stats()
        if stats is None:
            return
        buckets = [
            (str(float(bound)), sum(n for size, n in stats.sizes.items() if size <= bound))
            for bound in BATCH_BUCKETS
        ]
        yield HistogramMetricFamily(
            "hanet_search_batch_size",
            "Searches served together per batch.",
            buckets=[*buckets, ("+Inf", stats.batches)],
            sum_value=stats.served,
        )
        yield CounterMetricFamily(
            "hanet_search_overloaded",
            "Searches answered 503: they waited longer than HANET_SEARCH_WAIT_S for a batch.",
            value=stats.overloaded,
        )
        yield GaugeMetricFamily(
            "hanet_search_waiting", "Searches waiting for a batch now.", value=stats.waiting
        )


class _TimeRequests:
    """ASGI middleware: each HTTP request's latency, until its response is sent, by method,
    route and status. Plain ASGI rather than ``@app.middleware("http")``, whose response
    streaming through a task group costs every request more than the timing itself."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app, self.latency = app, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # 500 unless a response starts

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start
            )


def install_metrics(
    app: FastAPI,
    engine: Callable[[], Engine],
    dependencies: Sequence[params.Depends] = (),
    responses: dict | None = None,
) -> None:
    """Time every request, and serve ``/metrics`` (behind ``dependencies``, the app's read
    guard, with the ``responses`` it adds to the document)."""
    registry = CollectorRegistry()
    latency = Histogram(
        "hanet_request_seconds",
        "HTTP request latency.",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
    )
    registry.register(_QueueCollector(engine))
    registry.register(_BatchCollector(lambda: _batch_stats(app)))

    app.add_middleware(_TimeRequests, latency=latency)

    @app.get(
        "/metrics",
        summary="Prometheus metrics.",
        response_class=Response,
        dependencies=list(dependencies),
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}, **(responses or {})},
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _batch_stats(app: FastAPI) -> BatchStats | None:
    state = getattr(app.state, "hanet", None)
    return state.searches.stats() if state is not None else None
