"""The ``hanet`` command line. Logging is configured here, in the entry point, and nowhere else.
Heavy imports (torch, open_clip) happen inside the commands that need them."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from service.settings import HanetSettings

app = typer.Typer(help="HANet text-to-video search.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
index_app = typer.Typer(help="The offline indexer.", no_args_is_help=True)
app.add_typer(index_app, name="index")
VIDEO_SUFFIXES = {
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
}

log = logging.getLogger("hanet")


def _settings() -> HanetSettings:
    try:
        return HanetSettings()
    except Exception as exc:  # pydantic's ValidationError: say what is wrong and stop
        raise typer.BadParameter(f"invalid HANET_* settings: {exc}") from exc


def _settings_with_checkpoint() -> HanetSettings:
    settings = _settings()
    if not settings.checkpoint.is_file():
        raise typer.BadParameter(f"HANET_CHECKPOINT {settings.checkpoint} does not exist")
    return settings


@app.callback()
def main() -> None:
    logging.basicConfig(
        level=_settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("faiss.loader", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the database schema (SQLite in the data dir, or HANET_DATABASE_URL)."""
    import migrations
    from db.connect import make_engine

    url = _settings().resolved_database_url
    make_engine(url).dispose()  # creates the SQLite folder when needed
    migrations.upgrade(url, revision)
    typer.echo(f"database at revision {revision}: {url}")


def _engine(settings: HanetSettings):
    """The database, migrated to the newest schema (the indexer and the service share it)."""
    import migrations
    from db.connect import make_engine

    url = settings.resolved_database_url
    engine = make_engine(url)
    migrations.upgrade(url)
    return engine


def _load_model(settings: HanetSettings):
    import torch

    from model import CheckpointError, load_checkpoint

    try:
        model = load_checkpoint(settings.checkpoint)
    except CheckpointError as exc:
        raise typer.BadParameter(f"HANET_CHECKPOINT: {exc}") from exc
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


@index_app.command("add")
def index_add(
    paths: Annotated[list[Path], typer.Argument(help="Video files or folders (recursively).")],
    title: Annotated[str | None, typer.Option(help="Title (single file only).")] = None,
) -> None:
    """Queue videos for indexing; the same content twice is queued once."""
    from db import queue
    from model import file_sha256

    engine = _engine(_settings())
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise typer.BadParameter(f"no such file or folder: {path}")
    added = 0
    for f in files:
        _, created = queue.enqueue(
            engine,
            media_path=str(f.resolve()),
            sha256=file_sha256(f),
            title=title if len(files) == 1 else None,
        )
        added += created
    typer.echo(f"queued {added} new videos ({len(files) - added} already known)")


@index_app.command("run")
def index_run(
    watch: Annotated[bool, typer.Option(help="Keep waiting for new videos.")] = False,
) -> None:
    """Index queued videos (decode -> HANet video branch -> FAISS + rerank store)."""
    from index.reader import BuildError
    from indexer.pipeline import run_indexing

    settings = _settings()
    engine = _engine(settings)
    model = _load_model(settings)
    stop = threading.Event()  # SIGTERM (docker stop): finish the batch in hand, then exit
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        summary = run_indexing(
            engine, model, settings.index_dir, settings.indexing, watch=watch, stop=stop
        )
    except BuildError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(
        f"indexed {summary.indexed}, failed {len(summary.failed)} in {summary.seconds:.1f} s"
    )
    for video_id, reason in summary.failed.items():
        typer.echo(f"  failed video {video_id}: {reason}")


@index_app.command("rebuild")
def index_rebuild() -> None:
    """Re-encode every video with the configured checkpoint into a new build (published only
    once complete)."""
    from sqlalchemy import update

    from db.schema import Video
    from index.writer import promote
    from indexer.pipeline import run_indexing

    settings = _settings()
    engine = _engine(settings)
    model = _load_model(settings)
    staging = settings.data_dir / "index-rebuild"
    with engine.begin() as conn:
        conn.execute(update(Video).where(Video.status == "indexed").values(status="pending"))
    summary = run_indexing(engine, model, staging, settings.indexing)
    if (staging / "CURRENT").exists():
        promote(staging, settings.index_dir)
    typer.echo(f"rebuilt: indexed {summary.indexed}, failed {len(summary.failed)}")


@index_app.command("delete")
def index_delete(
    video_ids: Annotated[list[int], typer.Argument(help="Video ids (hanet index status).")],
) -> None:
    """Remove videos: out of search at once, out of the index files at `hanet index compact`."""
    from indexer.writer import remove_videos

    settings = _settings()
    gone = remove_videos(_engine(settings), settings.index_dir, video_ids)
    typer.echo(f"deleted {len(gone)} of {len(video_ids)} videos")


@index_app.command("compact")
def index_compact() -> None:
    """Rewrite the published build without the deleted videos' vectors and rows."""
    from index.reader import BuildError
    from index.writer import compact

    try:
        build = compact(_settings().index_dir)
    except BuildError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"compacted: {build.manifest['videos']} videos, vectors {build.manifest['counts']}")


@index_app.command("status")
def index_status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Videos per status, vectors per level, the active build and its checkpoint."""
    import json

    from db import queue
    from index.reader import BuildError, load_current

    settings = _settings()
    engine = _engine(settings)
    status: dict = {"videos": queue.counts(engine), "build": None}
    try:
        build = load_current(settings.index_dir)
        status["build"] = {
            "name": build.manifest["build"],
            "version": build.manifest["version"],
            "checkpoint_sha256": build.checkpoint_sha256,
            "factory": build.manifest["factory"],
            "vectors": build.manifest.get("counts", {}),
            "deleted_pending_compaction": len(build.vectors.deleted),
        }
    except BuildError:
        pass
    if json_out:
        typer.echo(json.dumps(status, indent=1))
        return
    typer.echo("videos: " + ", ".join(f"{k} {v}" for k, v in status["videos"].items()))
    b = status["build"]
    typer.echo(
        "build: none yet"
        if b is None
        else f"build: {b['name']} v{b['version']} ({b['factory']}), checkpoint "
        f"{b['checkpoint_sha256'][:12]}, vectors {b['vectors']}"
    )


@app.command("serve")
def serve(
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

    settings = _settings_with_checkpoint()
    uvicorn.run(create_app(settings, with_indexer=not api_only), host=host, port=port)


@app.command("init")
def init(
    out: Annotated[Path, typer.Option(help="Where to write the HANet checkpoint.")],
    arch: Annotated[str, typer.Option(help="HANet architecture name.")] = "ViT-B-32",
    clip_weights: Annotated[
        Path | None, typer.Option(help="open_clip weights file (.pt, .bin or .safetensors).")
    ] = None,
) -> None:
    """Make a HANet checkpoint, from published open_clip weights when given (zero-shot start:
    scores like CLIP with mean-pooled frames until trained)."""
    from model import CheckpointError, ConfigError, create_model

    try:
        model = create_model(arch, clip_weights=str(clip_weights) if clip_weights else None)
    except (CheckpointError, ConfigError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    digest = model.save(str(out))
    typer.echo(f"wrote {out} ({arch}, sha256 {digest[:16]})")


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(help="Folder for the videos and manifest.json.")],
    videos: Annotated[int, typer.Option(min=1, help="Number of videos.")] = 2000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same corpus.")
    ] = 0,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default: all CPUs).")
    ] = None,
) -> None:
    """Generate the procedural text-video corpus (H.264 MP4 files and a manifest)."""
    from corpus.synth import generate_corpus

    manifest = generate_corpus(out, videos, seed, workers)
    typer.echo(f"wrote {videos} videos and {manifest}")


@app.command("train")
def train(
    data: Annotated[
        str,
        typer.Option(help="Manifest or its folder, msrvtt:FILE, or vatex:train=F,val=F,test=F."),
    ],
    out: Annotated[Path, typer.Option(help="Best checkpoint (by validation rsum).")],
    work_dir: Annotated[Path, typer.Option(help="Training state, metrics, frame cache.")],
    arch: Annotated[str, typer.Option(help="HANet architecture.")] = "tiny",
    clip_weights: Annotated[
        Path | None, typer.Option(help="open_clip weights to start from.")
    ] = None,
    video_dir: Annotated[str | None, typer.Option(help="Video folder (MSR-VTT, VATEX).")] = None,
    objective: Annotated[
        str,
        typer.Option(
            help="hanet; global (the meanP baseline); or global-motion (that baseline with the "
            "temporal convolution trained: a control for the motion input)."
        ),
    ] = "hanet",
    motion_levels: Annotated[
        str | None,
        typer.Option(
            help="Temporal convolution on the action level, or on all three levels' "
            "input; default: the architecture's (action)."
        ),
    ] = None,
    keypoints: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Soft-argmax keypoints per frame whose positions the temporal convolution "
            "reads (0: none); default: the architecture's (0).",
        ),
    ] = None,
    motion_stream: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Features of a small convolutional network over each frame and its difference "
            "to the next that the temporal convolution reads (0: none); default: the "
            "architecture's (0).",
        ),
    ] = None,
    frozen_backbone: Annotated[
        bool, typer.Option(help="Cache frame features once; train the heads only.")
    ] = False,
    epochs: Annotated[int, typer.Option(min=1)] = 50,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    patience: Annotated[int, typer.Option(min=1)] = 10,
    warmup_epochs: Annotated[
        int,
        typer.Option(min=0, help="Epochs ranking against every negative before the hardest only."),
    ] = 0,
    lr_schedule: Annotated[
        str, typer.Option(help="constant (the spec's), or cosine: decays to 0 over --epochs.")
    ] = "constant",
    hard_negatives: Annotated[
        bool,
        typer.Option(
            help="Also rank each caption above a contrast caption made from it by one word "
            "swap (opposite direction or change, events reversed)."
        ),
    ] = False,
    time_budget_min: Annotated[float | None, typer.Option(help="Stop training after this.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from work-dir's saved state.")] = False,
    save_half: Annotated[
        bool, typer.Option(help="Store weights as float16 (half the size).")
    ] = False,
) -> None:
    """Train HANet (or the global-only baseline) and keep the best validation checkpoint."""
    import torch

    from corpus.datasets import DatasetError, load_dataset
    from corpus.prepare import split_data, vocab_from
    from model import HANet, get_config
    from model.backbone import load_clip_weights
    from model.config import HANetCfg
    from model.train import TrainCfg, check_compatible
    from model.train import train as run_training

    torch.manual_seed(seed)
    try:
        cfg_train = TrainCfg(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            objective=objective,
            frozen_backbone=frozen_backbone,
            seed=seed,
            warmup_epochs=warmup_epochs,
            lr_schedule=lr_schedule,
            hard_negatives=hard_negatives,
            time_budget_s=time_budget_min * 60 if time_budget_min else None,
            save_half=save_half,
        )
        cfg = get_config(arch)
        changes = {
            "motion_levels": motion_levels,
            "keypoints": keypoints,
            "motion_stream": motion_stream,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            cfg = HANetCfg.from_dict({**cfg.to_dict(), **changes})
        check_compatible(cfg, cfg_train)
        dataset = load_dataset(data, video_dir)
        vocab, cfg = vocab_from(dataset, cfg)
    except (DatasetError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    model = HANet(cfg, vocab)
    if clip_weights is not None:
        load_clip_weights(model.clip, clip_weights)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    log.info(
        "training %s (%s objective) on %s, vocabulary %d verbs / %d nouns",
        arch,
        objective,
        device,
        len(vocab.verbs),
        len(vocab.nouns),
    )
    train_data, _ = split_data(dataset, "train", cfg, vocab, work_dir / "cache")
    val_data, _ = split_data(dataset, "val", cfg, None, work_dir / "cache")
    history = run_training(model, train_data, val_data, cfg_train, work_dir, out, resume)
    best = max(history, key=lambda r: r["val_rsum"]) if history else None
    typer.echo(
        f"done: {len(history)} epochs, best validation rsum "
        f"{best['val_rsum'] if best else 'n/a'}; checkpoint {out}"
    )


@app.command("eval")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="HANet checkpoint.")],
    data: Annotated[str, typer.Option(help="Dataset (as for hanet train).")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    video_dir: Annotated[str | None, typer.Option(help="Video folder (MSR-VTT, VATEX).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Decoded-frame cache folder.")] = None,
) -> None:
    """The paper's retrieval metrics in both directions, with an ablation over levels."""
    import json

    import torch

    from corpus.datasets import DatasetError, load_dataset
    from corpus.prepare import hard_pairs, split_data
    from model import CheckpointError, load_checkpoint
    from model.evaluate import evaluate

    try:
        model = load_checkpoint(checkpoint)
        dataset = load_dataset(data, video_dir)
        data_split, items = split_data(dataset, split, model.cfg, None, cache_dir)
    except (CheckpointError, DatasetError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if torch.cuda.is_available():
        model.to("cuda")
    result = evaluate(
        model, data_split.frames, data_split.mask, data_split.captions, hard_pairs(items)
    )
    result["checkpoint_sha256"] = model.checkpoint_sha256
    result["split"], result["videos"] = split, len(items)
    typer.echo(format_metrics(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


def format_metrics(result: dict) -> str:
    """A plain-text table: the model's own score, then the ablation and hard distractors."""
    cols = ("R@1", "R@5", "R@10", "MedR", "MeanR")
    lines = [
        f"{'scores':28s} | t2v "
        + " ".join(f"{c:>6s}" for c in cols)
        + " | v2t "
        + " ".join(f"{c:>6s}" for c in cols)
        + " |  rsum"
    ]
    rows = [("model (fused)", result)] + list(result.get("ablation", {}).items())
    for name, m in rows:
        lines.append(
            f"{name:28s} |     "
            + " ".join(f"{m['t2v'][c]:6.1f}" for c in cols)
            + " |     "
            + " ".join(f"{m['v2t'][c]:6.1f}" for c in cols)
            + f" | {m['rsum']:6.1f}"
        )
    for kind, acc in result.get("hard", {}).items():
        wins = ", ".join(f"{k} {v:.1f}%" for k, v in acc.items() if k != "pairs")
        lines.append(f"{kind} distractors ({acc['pairs']} pairs), true caption wins: {wins}")
    return "\n".join(lines)


@app.command("demo")
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    videos: Annotated[int, typer.Option(min=1, help="Size of the demo corpus.")] = 120,
    serve: Annotated[bool, typer.Option(help="Serve the API when the corpus is indexed.")] = True,
) -> None:
    """Generate (or reuse) the demo corpus, index it with the configured checkpoint (the bundled
    demo model by default), show a search, then serve the API with an indexer worker."""
    from service.demo import run_demo

    settings = _settings_with_checkpoint()
    run_demo(settings, videos=videos, host=host, port=port, serve=serve)
