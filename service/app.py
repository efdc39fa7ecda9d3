"""The HTTP API, built by a factory (no import-time state). Torch and FAISS work runs in plain
``def`` routes (FastAPI's thread pool), never on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import mimetypes
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import queue
from db.connect import READ_ONLY, TitleReader
from db.schema import Video
from index.reader import Build, BuildError, load_current, warm
from index.vectors import VectorStoreError
from indexer.decode import DecodeError, decode_thumbnail
from indexer.writer import remove_videos
from model import file_sha256
from service.metrics import install_metrics
from service.schemas import (
    ConceptsPublic,
    Moment,
    SearchHit,
    SearchRequest,
    SearchResponse,
    VideoByPath,
    VideoList,
    VideoPublic,
)
from service.search import QueryCache, search
from service.settings import HanetSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"  # the search page (no build step)


class ServiceState:
    """What the routes share: settings, database, model, and the published index build
    (re-read when ``index/CURRENT`` changes, so new videos are searchable without a restart)."""

    def __init__(self, settings: HanetSettings) -> None:
        import migrations
        from db.connect import make_engine
        from model import load_checkpoint
        from model.speed import for_serving

        self.settings = settings
        use_threads(settings.threads)  # this is the search thread (see lifespan)
        url = settings.resolved_database_url
        self.engine = make_engine(url)
        # for the routes that only read: they never wait behind the indexer's writes
        self.reader = self.engine.execution_options(**READ_ONLY)
        self.titles = TitleReader(self.engine)  # the search thread's own connection
        migrations.upgrade(url)
        self.model = for_serving(load_checkpoint(settings.checkpoint), settings.int8_text)
        self._build: Build | None = None
        self._build_name: str | None = None  # "<build>/<version>" loaded (or that failed)
        self._error: BuildError | None = None  # why the published build cannot be used
        self._loading = False  # a newer version is being read in the background
        self._lock = threading.Lock()
        self.torch_thread: ThreadPoolExecutor | None = None  # where searches run (lifespan)
        self.queries = QueryCache(self.model, settings.query_cache_size)
        self.warming = False

    def build(self, wait: bool = False) -> Build | None:
        """The published build. The first one is loaded on the spot; a newer version is loaded
        in the background while searches go on with the one in memory (a publish rewrites
        the FAISS files, and reading them must not stall the searches that happen to come
        first), so a new version serves within about its load time. ``wait`` loads a newer
        version on the spot instead (for a caller that needs a video just published)."""
        try:
            name = (self.settings.index_dir / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        with self._lock:
            if name == self._build_name:
                if self._error is not None:
                    raise self._error
                return self._build
            if self._build is None or wait:
                self._install(*self._read())
                if self._error is not None:
                    raise self._error
                return self._build
            if not self._loading:
                self._loading = True
                threading.Thread(
                    target=self._load_in_background, name="hanet-load", daemon=True
                ).start()
            return self._build

    def _read(self) -> tuple[Build | None, BuildError | None, str]:
        """The published build, or why it cannot serve this model; and its name."""
        index_dir = self.settings.index_dir
        try:
            build = load_current(index_dir, expect_checkpoint=self.model.checkpoint_sha256)
        except BuildError as exc:
            return None, exc, (index_dir / "CURRENT").read_text().strip()
        return build, None, build.name

    def _install(self, build: Build | None, error: BuildError | None, name: str) -> None:
        """Make a read build the one searches use (the caller holds the lock)."""
        self._build, self._error, self._build_name = build, error, name
        if error is not None:
            log.error("cannot use the published index build: %s", error)
        if build is not None:
            self._warm(build)

    def _load_in_background(self) -> None:
        try:
            result = self._read()
        except (OSError, VectorStoreError) as exc:  # a version dropped while read: retry later
            log.warning("reading the new index build failed, will retry: %s", exc)
            result = None
        with self._lock:
            self._loading = False
            if result is not None:
                self._install(*result)

    def _warm(self, build: Build) -> None:
        """Read the new build's rerank rows into memory in the background."""

        def work() -> None:
            try:
                read = warm(build)
                log.info("touched %.1f MB of rerank rows", read / 1e6)
            except OSError as exc:  # a version dropped meanwhile: the next build warms again
                log.warning("could not warm the rerank rows: %s", exc)
            finally:
                self.warming = False

        self.warming = True
        threading.Thread(target=work, name="hanet-warm", daemon=True).start()


def _state(request: Request) -> ServiceState:
    return request.app.state.hanet


StateDep = Annotated[ServiceState, Depends(_state)]


def _require_key(state: StateDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Endpoints that change data need the API key, when one is configured."""
    expected = state.settings.api_key
    if expected is None:
        return
    given = (x_api_key or "").encode()
    if not hmac.compare_digest(given, expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key")


KeyDep = Depends(_require_key)


def _concepts(state: ServiceState, build: Build | None, video_id: int) -> ConceptsPublic | None:
    if build is None or video_id not in build.rows or state.model.vocab is None:
        return None
    return _concepts_public(state.model.top_concepts(build.embeddings([video_id]), k=3)[0])


def _concepts_public(top: dict | None) -> ConceptsPublic | None:
    if top is None:
        return None
    return ConceptsPublic.model_validate(
        {k: [{"name": c.name, "probability": c.probability} for c in v] for k, v in top.items()}
    )


def _public(state: ServiceState, video: Video, with_concepts: bool = False) -> VideoPublic:
    concepts = None
    if with_concepts and video.status == "indexed":
        try:
            build = state.build()
            if build is None or video.id not in build.rows:  # published after the one in memory
                build = state.build(wait=True)
            concepts = _concepts(state, build, video.id)
        except BuildError:
            concepts = None
    return VideoPublic(
        id=video.id,
        status=video.status,
        title=video.title,
        failure_reason=video.failure_reason,
        duration_s=video.duration_s,
        concepts=concepts,
    )


def _build_watcher(state: ServiceState, stop: threading.Event) -> threading.Thread:
    """Notices new index versions (every 0.5 s) and starts loading them, so that they serve
    without waiting for a request to notice them first."""

    def watch() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(BuildError, OSError):
                state.build()

    thread = threading.Thread(target=watch, name="hanet-build-watcher", daemon=True)
    thread.start()
    return thread


def use_threads(count: int | None) -> None:
    """Torch's and FAISS's thread count for the calling thread's work (``None``: leave the
    defaults, one per core). On two cores, with the in-process indexer, 1 measured faster for
    searches both while indexing and idle, at the same indexing rate (README, speed)."""
    if count is None:
        return
    import faiss
    import torch

    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)


def _indexer_thread(settings: HanetSettings, stop: threading.Event) -> threading.Thread:
    """The in-process indexer worker of `hanet serve` (its own model and connections)."""
    from db.connect import make_engine
    from indexer.pipeline import run_indexing
    from model import load_checkpoint

    def work() -> None:
        use_threads(settings.threads)
        engine = make_engine(settings.resolved_database_url)
        model = load_checkpoint(settings.checkpoint)
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


def create_app(settings: HanetSettings | None = None, with_indexer: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Searches run on one thread, the one that loaded the model: torch's OpenMP threads
        # spin briefly between operations only while the process's OpenMP threads fit its
        # cores, and every thread that runs torch work adds its own; a search on the thread
        # pool's threads measured 52-59 ms against 36 ms on the loading thread.
        torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanet-search")
        state = await asyncio.get_running_loop().run_in_executor(
            torch_thread, ServiceState, settings or HanetSettings()
        )
        state.torch_thread = torch_thread
        app.state.hanet = state
        with contextlib.suppress(BuildError):  # load (and warm) the index now, not at a search
            state.build()
        stop = threading.Event()
        watcher = _build_watcher(state, stop)
        worker = _indexer_thread(state.settings, stop) if with_indexer else None
        yield
        stop.set()
        watcher.join(timeout=5)
        if worker is not None:
            worker.join(timeout=30)
        torch_thread.submit(state.titles.close).result()  # on the thread that uses it
        torch_thread.shutdown(wait=True)
        state.engine.dispose()

    app = FastAPI(
        title="HANet text-to-video search",
        version="0.1.0",
        lifespan=lifespan,
        description="Upload videos, then find them, and the moment inside them, with a sentence.",
    )

    install_metrics(app, lambda: app.state.hanet.engine)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", summary="The process is alive.")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Model loaded, database reachable, index build matches the model.")
    def ready(state: StateDep) -> JSONResponse:
        checks: dict[str, str] = {"model": state.model.checkpoint_sha256 or "unsaved"}
        ok = True
        try:
            with Session(state.reader) as session:
                session.execute(select(1))
            checks["database"] = "ok"
        except Exception as exc:  # any driver error means not ready
            checks["database"], ok = f"unreachable: {exc}", False
        try:
            build = state.build()
            checks["index"] = "no build yet" if build is None else build.manifest["build"]
            checks["rerank_rows"] = "reading into memory" if state.warming else "ok"
        except BuildError as exc:
            checks["index"], ok = str(exc), False
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.post("/search", response_model=SearchResponse, summary="Search with a sentence.")
    async def search_route(body: SearchRequest, state: StateDep) -> Response:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(state.torch_thread, _search, state, body)
        # serialised by pydantic at once: FastAPI would validate the model again first
        return Response(result.model_dump_json(), media_type="application/json")

    def _search(state: ServiceState, body: SearchRequest) -> SearchResponse:
        start = time.perf_counter()
        try:
            build = state.build()
        except BuildError as exc:
            raise HTTPException(409, str(exc)) from exc
        if build is None:
            return SearchResponse(hits=[], took_ms=(time.perf_counter() - start) * 1000)
        found = search(
            state.model,
            build,
            body.query,
            body.top_k,
            state.settings.search_candidates,
            cache=state.queries,
        )
        if body.min_score is not None:
            found = [h for h in found if h.score >= body.min_score]
        known = state.titles([h.video_id for h in found])
        hits = [
            SearchHit(
                video_id=h.video_id,
                title=known[h.video_id],
                score=round(h.score, 4),
                scores=h.scores,
                moment=Moment(start_s=h.start_s, end_s=h.end_s),
                concepts=_concepts_public(h.concepts),
            )
            for h in found
            if h.video_id in known  # deleted since the build was read
        ]
        return SearchResponse(hits=hits, took_ms=round((time.perf_counter() - start) * 1000, 2))

    @app.post(
        "/videos",
        status_code=202,
        response_model=VideoPublic,
        summary="Ingest a video: multipart upload (field `file`, optional `title`) or "
        'JSON {"path": ...} under the media root.',
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "title": {"type": "string"},
                            },
                        }
                    },
                    "application/json": {"schema": VideoByPath.model_json_schema()},
                }
            }
        },
    )
    async def create_video(request: Request, state: StateDep, _key: None = KeyDep) -> VideoPublic:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                body = VideoByPath.model_validate(json.loads(await request.body()))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise HTTPException(400, f"the body is not valid JSON: {exc}") from exc
            except ValidationError as exc:
                raise HTTPException(422, exc.errors(include_url=False)) from exc
            path = _under_media_root(state.settings, body.path)
            return await run_in_threadpool(_enqueue, state, path, body.title)
        if kind == "multipart/form-data":
            return await _upload(request, state)
        raise HTTPException(
            415, 'send multipart/form-data (field `file`) or application/json ({"path": ...})'
        )

    @app.get("/videos", response_model=VideoList, summary="List videos, newest first.")
    def list_videos(
        state: StateDep,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> VideoList:
        with Session(state.reader) as session:
            total = session.scalar(select(func.count()).select_from(Video)) or 0
            rows = session.scalars(
                select(Video).order_by(Video.id.desc()).offset(offset).limit(limit)
            ).all()
            items = [_public(state, v) for v in rows]
        return VideoList(items=items, total=total, offset=offset, limit=limit)

    @app.get("/videos/{video_id}", response_model=VideoPublic, summary="One video's state.")
    def get_video(video_id: int, state: StateDep) -> VideoPublic:
        return _public(state, _video(state, video_id), with_concepts=True)

    @app.delete(
        "/videos/{video_id}", status_code=204, summary="Delete a video (gone from search at once)."
    )
    def delete_video(video_id: int, state: StateDep, _key: None = KeyDep) -> Response:
        video = _video(state, video_id)
        if not remove_videos(state.engine, state.settings.index_dir, [video_id]):
            raise HTTPException(404, f"no video {video_id}")
        for cached in _thumbnail_dir(state).glob(f"{video.content_sha256}-*.jpg"):
            cached.unlink(missing_ok=True)
        media = Path(video.media_path)
        if media.resolve().parent == state.settings.upload_dir.resolve():
            media.unlink(missing_ok=True)  # an upload is ours; a file ingested by path is not
        return Response(status_code=204)

    @app.get(
        "/videos/{video_id}/thumbnail",
        response_class=Response,
        summary="A JPEG frame of the video at `t` seconds (cached).",
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "The frame."},
            404: {"description": "No such video."},
            422: {"description": "A bad time, or a file that cannot be decoded."},
        },
    )
    def thumbnail(
        video_id: int,
        state: StateDep,
        t: Annotated[float, Query(ge=0, le=7 * 86400, description="Seconds into the video.")] = 0.0,
    ) -> Response:
        video = _video(state, video_id)
        if video.duration_s is not None and t > video.duration_s:
            raise HTTPException(422, f"t={t} s is past the end of the video ({video.duration_s} s)")
        folder = _thumbnail_dir(state)
        cached = folder / f"{video.content_sha256}-{round(t * 10)}.jpg"  # 0.1 s steps
        headers = {"cache-control": "public, max-age=86400"}
        if cached.is_file():
            return Response(cached.read_bytes(), media_type="image/jpeg", headers=headers)
        try:
            jpeg = decode_thumbnail(video.media_path, round(t * 10) / 10)
        except DecodeError as exc:
            raise HTTPException(422, f"cannot decode a frame of video {video_id}: {exc}") from exc
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(jpeg)
        os.replace(tmp, cached)
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    @app.get(
        "/videos/{video_id}/file",
        response_class=FileResponse,
        summary="The stored video file; supports HTTP Range requests, so players can seek.",
        responses={
            200: {"content": {"video/mp4": {}}, "description": "The whole file."},
            206: {"description": "The requested byte range."},
            404: {"description": "No such video."},
            410: {"description": "The media file is no longer on disk."},
            416: {"description": "A range outside the file."},
        },
    )
    def video_file(video_id: int, state: StateDep) -> FileResponse:
        path = Path(_video(state, video_id).media_path)
        if not path.is_file():
            raise HTTPException(410, f"the media file of video {video_id} is no longer on disk")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind)

    return app


def _video(state: ServiceState, video_id: int) -> Video:
    with Session(state.reader) as session:
        video = session.get(Video, video_id)
        if video is None:
            raise HTTPException(404, f"no video {video_id}")
        session.expunge(video)
        return video


def _thumbnail_dir(state: ServiceState) -> Path:
    return state.settings.data_dir / "thumbnails"


def _under_media_root(settings: HanetSettings, given: str) -> Path:
    if settings.media_root is None:
        raise HTTPException(400, "ingest by path is off: HANET_MEDIA_ROOT is not set")
    root = settings.media_root.resolve()
    path = (root / given).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(403, "the path leaves the media root")
    if not path.is_file():
        raise HTTPException(404, f"no file {given!r} under the media root")
    return path


def _enqueue(state: ServiceState, path: Path, title: str | None) -> VideoPublic:
    video_id, _created = queue.enqueue(
        state.engine, media_path=str(path), sha256=file_sha256(path), title=title
    )
    with Session(state.engine) as session:
        return _public(state, session.get(Video, video_id))


async def _upload(request: Request, state: ServiceState) -> VideoPublic:
    limit = state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 1024 * 1024:
        raise HTTPException(413, f"upload larger than {limit} bytes")
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(422, "multipart field `file` is missing")
    title = form.get("title") if isinstance(form.get("title"), str) else None
    folder = state.settings.upload_dir
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{uuid.uuid4().hex}"
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"upload larger than {limit} bytes")
                out.write(chunk)
        if size == 0:
            raise HTTPException(422, "the uploaded file is empty")
        digest = await run_in_threadpool(file_sha256, tmp)
        suffix = Path(upload.filename or "").suffix.lower()[:10]
        final = folder / f"{digest}{suffix}"
        shutil.move(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return await run_in_threadpool(_enqueue, state, final, title or upload.filename)
