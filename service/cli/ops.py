"""Operations: the database schema, the indexer, the HTTP API and the demo. Each command gets its
settings, database and model from the composition root (``service.cli.common``)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service import runtime
from service.cli.common import (
    database,
    indexing_model,
    settings_of,
    settings_with_checkpoint,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from service.settings import HanetSettings

log = logging.getLogger(__name__)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
index_app = typer.Typer(help="The offline indexer.", no_args_is_help=True)
VIDEO_SUFFIXES = set(".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .flv .wmv .3gp".split())


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the database schema (SQLite in the data dir, or HANET_DATABASE_URL)."""
    settings = settings_of(ctx)
    url = settings.resolved_database_url
    if revision == "head":
        runtime.open_database(settings, migrate=True).dispose()
    else:  # a step on the way (the composition root migrates to the newest only)
        import migrations
        from db.connect import make_engine

        make_engine(url).dispose()  # creates the SQLite folder when needed
        migrations.upgrade(url, revision)
    typer.echo(f"database at revision {revision}: {url}")


def video_files(paths: list[Path]) -> list[Path]:
    """The video files among ``paths``, folders searched recursively (by file suffix)."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise typer.BadParameter(f"no such file or folder: {path}")
    return files


@index_app.command("add")
def index_add(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Video files or folders (recursively).")],
    title: Annotated[str | None, typer.Option(help="Title (single file only).")] = None,
) -> None:
    """Queue videos for indexing; the same content twice is queued once. Each file is probed
    first, as an upload is: one that is not a video is refused with the reason."""
    from db import queue
    from indexer.decode import DecodeError, probe_media
    from model import file_sha256

    files = video_files(paths)
    added, refused = 0, {}
    with database(settings_of(ctx)) as engine:
        for f in files:
            try:
                media = probe_media(f)
            except DecodeError as exc:
                refused[f] = str(exc)
                continue
            _, created = queue.enqueue(
                engine,
                media_path=str(f.resolve()),
                sha256=file_sha256(f),
                title=title if len(files) == 1 else None,
                media_type=media.media_type,
            )
            added += created
    known = len(files) - added - len(refused)
    typer.echo(f"queued {added} new videos ({known} already known, {len(refused)} refused)")
    for f, reason in refused.items():
        typer.echo(f"  refused {f}: not a video: {reason}")


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM sets ``stop`` (the job ends cleanly at its next check) while the block runs; the
    handler before it is restored after, so a caller in the same process (a test) keeps its own."""
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be restored
            signal.signal(signal.SIGTERM, previous)


@index_app.command("run")
def index_run(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option(help="Keep waiting for new videos.")] = False,
) -> None:
    """Index queued videos (decode -> HANet video branch -> FAISS + rerank store)."""
    from index.reader import BuildError
    from indexer.job import run_indexing
    from service.webhooks import WebhookCfg, start_delivery

    settings = settings_of(ctx)
    runtime.index_target(settings)  # in Milvus mode, the index folder resolves to Milvus
    stop = threading.Event()  # SIGTERM (docker stop): finish the batch in hand, then exit
    with database(settings) as engine:
        model = indexing_model(settings)
        hooks = WebhookCfg.of(settings) if watch else None  # a watching worker delivers too
        deliverer = start_delivery(engine, hooks, stop) if hooks else None
        with _stop_on_sigterm(stop):
            try:
                summary = run_indexing(
                    engine, model, settings.index_dir, settings.indexing, watch=watch, stop=stop
                )
            except BuildError as exc:
                raise typer.BadParameter(str(exc)) from exc
            finally:
                stop.set()
                if deliverer is not None:
                    deliverer.join(timeout=15)
    typer.echo(
        f"indexed {summary.indexed}, failed {len(summary.failed)} in {summary.seconds:.1f} s"
    )
    for video_id, reason in summary.failed.items():
        typer.echo(f"  failed video {video_id}: {reason}")


@index_app.command("rebuild")
def index_rebuild(
    ctx: typer.Context,
    cancel: Annotated[
        bool, typer.Option("--cancel", help="End the running rebuild unfinished.")
    ] = False,
) -> None:
    """Re-encode every indexed video with the configured checkpoint into a new build, which
    swaps in once complete (searches use the live build meanwhile). One rebuild at a time;
    run it again after a crash or SIGTERM to resume it."""
    from db.rebuilds import RebuildError
    from index.reader import BuildError
    from indexer.rebuild import run_rebuild

    settings = settings_of(ctx)
    runtime.index_target(settings)  # in Milvus mode, the index folder resolves to Milvus
    if cancel:
        _cancel_rebuild(settings)
        return
    stop = threading.Event()  # SIGTERM: publish what is encoded, then let go (resumable)
    with database(settings) as engine:
        model = indexing_model(settings)
        with _stop_on_sigterm(stop):
            try:
                summary = run_rebuild(
                    engine, model, settings.index_dir, settings.indexing, stop=stop
                )
            except RebuildError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(1) from exc
            except BuildError as exc:
                raise typer.BadParameter(str(exc)) from exc
    if summary.stopped:
        typer.echo(f"rebuild #{summary.rebuild_id} stopped: run `hanet index rebuild` to resume")
        return
    typer.echo(
        f"rebuilt: indexed {summary.indexed}, failed {len(summary.failed)} in "
        f"{summary.seconds:.1f} s; published {summary.build}"
    )
    for video_id, reason in summary.failed.items():
        typer.echo(f"  failed video {video_id}: {reason}")


def _cancel_rebuild(settings: HanetSettings) -> None:
    """End the running rebuild and remove the build it had under way (in Milvus: its
    collections). Refused once its swap began (a mark the swap and the cancel each set or
    check in one conditional update): such a rebuild is finished, not cancelled."""
    import shutil

    from db import rebuilds
    from index import milvus_rebuild
    from index.milvus import MilvusTarget
    from index.writer import writing
    from indexer.rebuild import staging_dir

    target = runtime.index_target(settings)
    with database(settings) as engine, writing(settings.index_dir):
        try:
            info = rebuilds.cancel(engine)
        except rebuilds.RebuildSwapping as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        if isinstance(target, MilvusTarget):
            milvus_rebuild.drop_rebuild(target)
        else:
            shutil.rmtree(staging_dir(settings.index_dir), ignore_errors=True)
    typer.echo("no rebuild is running" if info is None else f"cancelled {info.describe()}")


@index_app.command("delete")
def index_delete(
    ctx: typer.Context,
    video_ids: Annotated[list[int], typer.Argument(help="Video ids (hanet index status).")],
) -> None:
    """Remove videos: out of search at once, out of the index files at `hanet index compact`."""
    from indexer.writer import remove_videos

    settings = settings_of(ctx)
    runtime.index_target(settings)
    with database(settings) as engine:
        gone = remove_videos(engine, settings.index_dir, video_ids)
    typer.echo(f"deleted {len(gone)} of {len(video_ids)} videos")


@index_app.command("compact")
def index_compact(ctx: typer.Context) -> None:
    """Rewrite the published build without the deleted videos' vectors and rows."""
    from index.reader import BuildError
    from index.writer import compact

    target = runtime.index_target(settings_of(ctx))
    try:
        if not isinstance(target, Path):
            from index.milvus_index import compact as compact_milvus

            summary = compact_milvus(target).summary()
            typer.echo(f"compaction asked of Milvus: {summary['videos']} videos")
            return
        build = compact(target)
    except BuildError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"compacted: {build.manifest['videos']} videos, vectors {build.manifest['counts']}")


@index_app.command("status")
def index_status(
    ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Videos per status, vectors per level, the active build and its checkpoint."""
    from db import queue, rebuilds
    from index.reader import BuildError, load_current

    settings = settings_of(ctx)
    with database(settings) as engine:
        status: dict = {"videos": queue.counts(engine), "build": None, "rebuild": None}
        rebuild = rebuilds.running(engine)
    if rebuild is not None:
        status["rebuild"] = rebuild.to_json()
    target = runtime.index_target(settings)
    with contextlib.suppress(BuildError):  # none published yet
        if isinstance(target, Path):
            status["build"] = load_current(target).summary()
        else:
            from index.milvus_index import load_current as load_from_milvus

            status["build"] = load_from_milvus(target).summary()
    if json_out:
        typer.echo(json.dumps(status, indent=1))
        return
    typer.echo("videos: " + ", ".join(f"{k} {v}" for k, v in status["videos"].items()))
    b = status["build"]
    typer.echo(
        "build: none yet"
        if b is None
        else f"build: {b['build']} v{b['version']} ({b['factory']}), checkpoint "
        f"{b['checkpoint_sha256'][:12]}, vectors {b['vectors']}"
    )
    if rebuild is not None:
        typer.echo(rebuild.describe())


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_only: Annotated[
        bool,
        typer.Option(help="No in-process indexer (run `hanet index run --watch` workers instead)."),
    ] = False,
) -> None:
    """The HTTP API, plus by default an indexer worker in the same process."""
    import uvicorn

    from service.app import create_app

    settings = settings_with_checkpoint(ctx)
    uvicorn.run(create_app(settings, with_indexer=not api_only), host=host, port=port)


def demo(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    videos: Annotated[int, typer.Option(min=1, help="Size of the demo corpus.")] = 120,
    long_videos: Annotated[
        int, typer.Option(min=0, help="Long videos (one to two minutes) beside the clips.")
    ] = 3,
    serve: Annotated[bool, typer.Option(help="Serve the API when the corpus is indexed.")] = True,
) -> None:
    """Generate (or reuse) the demo corpus, index it with the configured checkpoint (the bundled
    demo model by default), show a search, then serve the API with an indexer worker."""
    from service.demo import run_demo

    settings = settings_with_checkpoint(ctx)
    run_demo(settings, videos=videos, long_videos=long_videos, host=host, port=port, serve=serve)
