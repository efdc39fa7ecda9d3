"""``hanet demo`` (what ``make demo`` runs): the whole product on one machine, from nothing.

It generates (or reuses) a small procedural corpus of H.264 videos and a few long ones (minutes
of many events, cut into segments at indexing), queues them in the service's
own database (``HANET_DATA_DIR``, SQLite by default), indexes them with the real indexer (PyAV
decoding, the configured checkpoint's video branch, FAISS per level, the rerank store), shows one
search in the terminal, then serves the HTTP API with its in-process indexer worker, so uploads
become searchable while it runs. The README's curl walkthrough runs against it. The database, the
model and the search engine come from the composition root (``service.runtime``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from service import runtime
from service.settings import HanetSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from model import HANet

CORPUS_SEED = 7


def prepare_demo(
    settings: HanetSettings, engine: Engine, model: HANet, videos: int = 120, long_videos: int = 3
) -> tuple[Path, Path | None]:
    """Corpus (clips, and ``long_videos`` of one to two minutes), queue and index for the demo;
    returns the manifests. Idempotent: a second run reuses the files, finds every video already
    queued (same content) and indexes nothing."""
    from corpus.datasets import load_generic
    from corpus.long import generate_long_corpus
    from corpus.synth import generate_corpus
    from db import queue
    from indexer.job import run_indexing
    from model import file_sha256

    typer.echo(f"model: {settings.checkpoint.name} (sha256 {model.checkpoint_sha256[:12]})")
    corpus = settings.data_dir / "demo-corpus"
    typer.echo(f"corpus: {videos} procedural H.264 videos in {corpus}")
    manifest = generate_corpus(corpus, videos, seed=CORPUS_SEED)
    files = [(item.path, item.id) for item in load_generic(manifest).videos]
    long_manifest = None
    if long_videos:
        long = settings.data_dir / "demo-long"
        typer.echo(f"long videos: {long_videos} of one to two minutes of events in {long}")
        long_manifest = generate_long_corpus(long, long_videos, CORPUS_SEED, 2, True, 1.0, 2.0)
        listed = json.loads(long_manifest.read_text())["videos"]
        files += [(long / v["path"], v["id"]) for v in listed]
    for path, title in files:
        queue.enqueue(engine, media_path=str(path.resolve()), sha256=file_sha256(path), title=title)
    summary = run_indexing(engine, model, settings.index_dir, settings.indexing)
    counts = queue.counts(engine)
    typer.echo(
        f"indexed {summary.indexed} new videos in {summary.seconds:.1f} s; "
        f"{counts['indexed']} searchable, {counts['failed']} failed"
    )
    return manifest, long_manifest


def show_search(
    settings: HanetSettings, engine: Engine, model: HANet, manifest: Path, long: Path | None
) -> None:
    """Searches in the terminal: a caption written for one demo clip, in another wording; and
    one of a long video's events, with the moments found inside it."""
    from corpus.datasets import load_generic
    from db.connect import hit_rows

    searcher = runtime.build_searcher(settings, model)
    item = load_generic(manifest).videos[0]
    asked = [(item.captions[1].text, item.id, None)]
    if long is not None:
        video = json.loads(long.read_text())["videos"][0]
        event = video["events"][len(video["events"]) // 2]
        asked.append((event["captions"][0]["text"], video["id"], event))
    for query, title, event in asked:
        hits = searcher.search(query, top_k=100)
        rows = hit_rows(engine, [h.video_id for h in hits])
        known = {video_id: row.title for video_id, row in rows.items()}
        rank = next((r for r, h in enumerate(hits, 1) if known.get(h.video_id) == title), None)
        typer.echo(f'\nsearch: "{query}" (written for {title}, which ranks {rank or "> 100"})')
        if event is not None:
            typer.echo(f"  (it happens at {event['start_s']:.1f}-{event['end_s']:.1f} s)")
        for r, hit in enumerate(hits[:3], start=1):
            moments = ", ".join(f"{m.start_s:.1f}-{m.end_s:.1f} s" for m in hit.moments)
            typer.echo(
                f"  {r}. video {hit.video_id} ({known.get(hit.video_id)}) score "
                f"{hit.score:.3f}, moments {moments}"
            )


def run_demo(
    settings: HanetSettings,
    videos: int = 120,
    long_videos: int = 3,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: bool = True,
) -> None:
    """Prepare the demo, show searches, then (``serve``) serve the API until Ctrl-C."""
    model = runtime.load_model(settings)  # on the CPU: one copy for indexing and the search shown
    engine = runtime.open_database(settings, migrate=True)  # the demo starts from nothing
    try:
        manifest, long = prepare_demo(settings, engine, model, videos, long_videos)
        show_search(settings, engine, model, manifest, long)
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
