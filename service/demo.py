"""``hanet demo`` (what ``make demo`` runs): the whole product on one machine, from nothing.

It generates (or reuses) a small procedural corpus of H.264 videos, queues them in the service's
own database (``HANET_DATA_DIR``, SQLite by default), indexes them with the real indexer (PyAV
decoding, the configured checkpoint's video branch, FAISS per level, the rerank store), shows one
search in the terminal, then serves the HTTP API with its in-process indexer worker, so uploads
become searchable while it runs. The README's curl walkthrough runs against it. The database, the
model and the search engine come from the composition root (``service.runtime``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from service import runtime
from service.settings import HanetSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from model import HANet

CORPUS_SEED = 7


def prepare_demo(settings: HanetSettings, engine: Engine, model: HANet, videos: int = 120) -> Path:
    """Corpus, queue and index for the demo; returns the corpus manifest. Idempotent: a second
    run reuses the files, finds every video already queued (same content) and indexes nothing."""
    from corpus.datasets import load_generic
    from corpus.synth import generate_corpus
    from db import queue
    from indexer.job import run_indexing
    from model import file_sha256

    typer.echo(f"model: {settings.checkpoint.name} (sha256 {model.checkpoint_sha256[:12]})")
    corpus = settings.data_dir / "demo-corpus"
    typer.echo(f"corpus: {videos} procedural H.264 videos in {corpus}")
    manifest = generate_corpus(corpus, videos, seed=CORPUS_SEED)
    for item in load_generic(manifest).videos:
        queue.enqueue(
            engine,
            media_path=str(item.path.resolve()),
            sha256=file_sha256(item.path),
            title=item.id,
        )
    summary = run_indexing(engine, model, settings.index_dir, settings.indexing)
    counts = queue.counts(engine)
    typer.echo(
        f"indexed {summary.indexed} new videos in {summary.seconds:.1f} s; "
        f"{counts['indexed']} searchable, {counts['failed']} failed"
    )
    return manifest


def show_search(settings: HanetSettings, engine: Engine, model: HANet, manifest: Path) -> None:
    """One search in the terminal: a caption written for one demo video, in another wording."""
    from corpus.datasets import load_generic
    from db.connect import hit_rows

    item = load_generic(manifest).videos[0]
    query = item.captions[1].text
    hits = runtime.build_searcher(settings, model).search(query, top_k=100)
    rows = hit_rows(engine, [h.video_id for h in hits])
    known = {video_id: row.title for video_id, row in rows.items()}
    rank = next((r for r, h in enumerate(hits, 1) if known.get(h.video_id) == item.id), None)
    typer.echo(f'\nsearch: "{query}" (written for {item.id}, which ranks {rank or "> 100"})')
    for r, hit in enumerate(hits[:3], start=1):
        typer.echo(
            f"  {r}. video {hit.video_id} ({known.get(hit.video_id)}) score {hit.score:.3f}, "
            f"moment {hit.start_s:.2f}-{hit.end_s:.2f} s"
        )


def run_demo(
    settings: HanetSettings,
    videos: int = 120,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: bool = True,
) -> None:
    """Prepare the demo, show a search, then (``serve``) serve the API until Ctrl-C."""
    model = runtime.load_model(settings)  # on the CPU: one copy for indexing and the search shown
    engine = runtime.open_database(settings, migrate=True)  # the demo starts from nothing
    try:
        manifest = prepare_demo(settings, engine, model, videos)
        show_search(settings, engine, model, manifest)
    finally:
        engine.dispose()
    if serve:
        _serve(settings, host, port)


def _serve(settings: HanetSettings, host: str, port: int) -> None:
    import uvicorn

    from service.app import create_app

    base = f"http://{host}:{port}"
    body = '{"query": "a big blue square moves left", "top_k": 3}'
    typer.echo(
        f"\nServing on {base} (API docs: {base}/docs); Ctrl-C stops. Try:\n"
        f"  curl -H 'content-type: application/json' -d '{body}' {base}/search\n"
    )
    uvicorn.run(create_app(settings, with_indexer=True), host=host, port=port)
