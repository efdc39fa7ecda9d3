"""The search page, and the probes: alive (/health) and able to serve (/ready)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from index.reader import BuildError
from service.deps import StateDep

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"  # the search page (no build step)

router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/health", summary="The process is alive.")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Model loaded, database reachable, index build matches the model.")
def ready(state: StateDep) -> JSONResponse:
    checks: dict[str, str] = {"model": state.searcher.model.checkpoint_sha256 or "unsaved"}
    ok = True
    try:
        with Session(state.reader) as session:
            session.execute(select(1))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"], ok = f"unreachable: {exc}", False
    index = state.searcher.index
    try:
        build = index.current()
        checks["index"] = "no build yet" if build is None else build.name
        checks["rerank_rows"] = "reading into memory" if index.warming else "ok"
    except BuildError as exc:
        checks["index"], ok = str(exc), False
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)
