"""The HTTP API, assembled by a factory (no import-time state): the routers of service.routes,
the search page's static files, the metrics, and a lifespan that builds the shared state
(service.state) from the composition root (service.runtime). Torch and FAISS work never runs
on the event loop: searches run on the search thread, other heavy routes are plain ``def``
routes (FastAPI's thread pool)."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from service import runtime
from service.deps import KeyDep, ReadDep
from service.headers import HanetAPI
from service.metrics import install_metrics
from service.routes import access, media, page, search, videos, webhooks
from service.settings import HanetSettings
from service.state import open_state
from service.webhooks import WebhookCfg, start_delivery

log = logging.getLogger(__name__)

KEY_NEEDED = {401: {"description": "Missing or wrong X-API-Key (HANET_API_KEY)."}}
UNREADABLE = {400: {"description": "A body that cannot be read as JSON text (not UTF-8)."}}


def create_app(settings: HanetSettings | None = None, with_indexer: bool = False) -> FastAPI:
    """The app for ``settings`` (default: from the environment); ``with_indexer`` also runs an
    indexer worker in the process (`hanet serve` without --api-only). Every response carries
    the security headers of service.headers; other origins may call it only when
    ``settings.cors_origins`` names them."""
    settings = settings or runtime.load_settings()
    app = HanetAPI(
        title="HANet text-to-video search",
        version="0.1.0",
        lifespan=_lifespan(settings, with_indexer),
        description="Upload videos, then find them, and the moment inside them, with a sentence.",
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    reads = [ReadDep] if settings.protect_reads else []  # the guards, as settings say
    keyed = [KeyDep] if settings.api_key is not None else []
    guarded = KEY_NEEDED if reads else {}
    install_metrics(app, lambda: app.state.hanet.reader, reads, guarded)  # never waits on writes
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    include_routers(app, reads, keyed)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
            max_age=600,
        )
    return app


def include_routers(app: FastAPI, reads: list, keyed: list) -> None:
    """The routes, reads behind ``reads`` and changes behind ``keyed`` (each empty when the
    settings guard nothing, so the OpenAPI document names the key only where it is needed);
    the media session only when there is a key to trade."""
    read_401 = KEY_NEEDED if reads else {}
    app.include_router(page.router)  # the page shell and the probes: always open
    app.include_router(search.router, dependencies=reads, responses={**read_401, **UNREADABLE})
    for router in (videos.router, media.router):
        app.include_router(router, dependencies=reads, responses=read_401)
    app.include_router(videos.changes, dependencies=keyed, responses=KEY_NEEDED if keyed else {})
    app.include_router(webhooks.router, dependencies=keyed, responses=KEY_NEEDED if keyed else {})
    if keyed:
        app.include_router(access.router, dependencies=keyed, responses=KEY_NEEDED)
        app.include_router(access.logout)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with non-finite numbers in the echoed input written as text: Python's
    JSON parser reads ``NaN`` and ``Infinity``, JSON cannot write them back (a 500 otherwise)."""
    detail = _finite(jsonable_encoder(exc.errors()))
    return JSONResponse(status_code=422, content={"detail": detail})


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _lifespan(
    settings: HanetSettings, with_indexer: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await open_state(settings)  # raises runtime.SchemaError on an old schema
        app.state.hanet = state
        stop = threading.Event()
        watcher = state.searcher.index.watch(stop)  # new index versions serve without a request
        worker = start_indexer(settings, stop) if with_indexer else None
        hooks = WebhookCfg.of(settings)
        deliverer = start_delivery(state.engine, hooks, stop) if hooks else None
        try:
            yield
        finally:
            stop.set()
            watcher.join(timeout=5)
            if deliverer is not None:
                deliverer.join(timeout=30)
            if worker is not None:
                worker.join(timeout=30)
            state.close()

    return lifespan


def start_indexer(settings: HanetSettings, stop: threading.Event) -> threading.Thread:
    """The in-process indexer worker, until ``stop``: its own model on the indexing device and
    its own engine (opened after the app's, which migrated the schema when that was asked)."""

    def work() -> None:
        from indexer.job import run_indexing

        try:
            runtime.use_threads(settings.threads)
            model = runtime.load_model(settings, device=runtime.indexing_device(settings))
            engine = runtime.open_database(settings, migrate=False)
        except Exception:
            log.exception("the in-process indexer could not start")
            return
        try:
            cfg = dataclasses.replace(settings.indexing, poll_s=1.0)
            run_indexing(
                engine, model, settings.index_dir, cfg, watch=True, progress=False, stop=stop
            )
        except Exception:
            log.exception("the in-process indexer stopped")
        finally:
            engine.dispose()

    thread = threading.Thread(target=work, name="hanet-indexer", daemon=True)
    thread.start()
    return thread
