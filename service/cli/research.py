"""Research: the procedural corpus, checkpoints, training and evaluation. These commands read
files named on the command line, not the service's settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.config_options import CONFIG_OPTIONS, train_settings

if TYPE_CHECKING:
    from corpus.datasets import Dataset
    from model import ConceptVocab, HANet, HANetCfg
    from model.train import TrainCfg

log = logging.getLogger(__name__)

FromCheckpoint = Annotated[
    Path | None,
    typer.Option(
        help="Fine-tune this HANet checkpoint (its architecture and concept vocabulary; "
        "--arch and the architecture options are then ignored)."
    ),
]
ServedFrames = Annotated[
    bool,
    typer.Option(
        help="Decode each video as the indexer embeds one unit (segment sampling and motion "
        "partners): for clips cut from long videos (python -m corpus.windows)."
    ),
]


def init(
    out: Annotated[Path, typer.Option(help="Where to write the HANet checkpoint.")],
    arch: Annotated[
        str,
        typer.Option(
            help="HANet architecture name (tiny, ViT-B-32), or with --pretrained an open_clip "
            "architecture: RN50, ViT-B-32, ViT-B-32-quickgelu, ViT-B-16, ViT-L-14."
        ),
    ] = "ViT-B-32",
    clip_weights: Annotated[
        Path | None, typer.Option(help="open_clip weights file (.pt, .bin or .safetensors).")
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="open_clip pretrained weights for --arch: a tag of its registry (e.g. openai, "
            "laion2b_s34b_b79k; downloaded once into open_clip's cache) or a weights file."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="open_clip's download cache (default: its own).")
    ] = None,
) -> None:
    """Make a HANet checkpoint, from published open_clip weights when given (zero-shot start:
    scores like CLIP with mean-pooled frames until trained)."""
    from model import CheckpointError, ConfigError, create_model

    if pretrained is not None and clip_weights is not None:
        raise typer.BadParameter("give --pretrained or --clip-weights, not both")
    try:
        if pretrained is not None:
            from model.pretrained import create_pretrained

            model = create_pretrained(arch, pretrained, str(cache_dir) if cache_dir else None)
        else:
            model = create_model(arch, clip_weights=str(clip_weights) if clip_weights else None)
    except (CheckpointError, ConfigError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    digest = model.save(str(out))
    source = f", weights {pretrained}" if pretrained else ""
    typer.echo(f"wrote {out} ({arch}{source}, sha256 {digest[:16]})")


def synth(
    out: Annotated[Path, typer.Option(help="Folder for the videos and manifest.json.")],
    videos: Annotated[int, typer.Option(min=1, help="Number of videos.")] = 2000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same corpus.")
    ] = 0,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default: all CPUs).")
    ] = None,
    long: Annotated[
        bool, typer.Option("--long", help="Long videos of many events, each with its true span.")
    ] = False,
    min_minutes: Annotated[
        float, typer.Option(min=0.01, help="Shortest long video, in minutes (with --long).")
    ] = 2.0,
    max_minutes: Annotated[
        float, typer.Option(min=0.01, help="Longest long video, in minutes (with --long).")
    ] = 10.0,
) -> None:
    """Generate the procedural text-video corpus (H.264 MP4 files and a manifest): 2-second
    videos of one event each, or with --long videos of several minutes for moment retrieval."""
    if not long:
        from corpus.synth import generate_corpus

        manifest = generate_corpus(out, videos, seed, workers)
        typer.echo(f"wrote {videos} videos and {manifest}")
        return
    from corpus.long import generate_long_corpus

    if min_minutes > max_minutes:
        raise typer.BadParameter(f"--min-minutes {min_minutes} > --max-minutes {max_minutes}")
    manifest = generate_long_corpus(
        out, videos, seed, workers, min_minutes=min_minutes, max_minutes=max_minutes
    )
    typer.echo(f"wrote {videos} long videos and {manifest}")


def train(
    ctx: typer.Context,
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
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Start from open_clip's pretrained weights for --arch (an open_clip "
            "architecture then): a registry tag or a weights file, as for hanet init."
        ),
    ] = None,
    video_dir: Annotated[str | None, typer.Option(help="Video folder (MSR-VTT, VATEX).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from work-dir's saved state.")] = False,
    from_checkpoint: FromCheckpoint = None,
    served_frames: ServedFrames = False,
) -> None:
    """Train HANet (or the global-only baseline) and keep the best validation checkpoint."""
    import torch

    from corpus.datasets import DatasetError, load_dataset
    from corpus.prepare import split_data
    from model import CheckpointError
    from model.train import train as run_training

    if sum(x is not None for x in (pretrained, clip_weights, from_checkpoint)) > 1:
        raise typer.BadParameter("give one of --pretrained, --clip-weights, --from-checkpoint")
    try:
        cfg_train, cfg = train_settings(arch, ctx.meta[CONFIG_OPTIONS], pretrained)
        torch.manual_seed(cfg_train.seed)
        dataset = load_dataset(data, video_dir)
        model = _model_to_train(dataset, cfg, cfg_train, clip_weights, pretrained, from_checkpoint)
    except (DatasetError, ValueError, CheckpointError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    cfg, vocab = model.cfg, model.vocab
    sizes = f"vocabulary {len(vocab.verbs)} verbs / {len(vocab.nouns)} nouns"
    log.info(
        "training %s (%s objective) on %s, %s", cfg.name, cfg_train.objective, model.device, sizes
    )
    cache = work_dir / "cache"
    train_data, _ = split_data(dataset, "train", cfg, vocab, cache, served=served_frames)
    val_data, _ = split_data(dataset, "val", cfg, None, cache, served=served_frames)
    history = run_training(model, train_data, val_data, cfg_train, work_dir, out, resume)
    best = max(history, key=lambda r: r["val_rsum"]) if history else None
    trained = history[-1]["epoch"] if history else 0  # epoch 0: validation before training
    typer.echo(
        f"done: {trained} epochs, best validation rsum "
        f"{best['val_rsum'] if best else 'n/a'} (epoch {best['epoch'] if best else 'n/a'}); "
        f"checkpoint {out}"
    )


def _model_to_train(
    dataset: Dataset,
    cfg: HANetCfg,
    cfg_train: TrainCfg,
    clip_weights: Path | None,
    pretrained: str | None,
    from_checkpoint: Path | None,
) -> HANet:
    """A new model for ``cfg`` with the training captions' vocabulary, or the checkpoint to
    fine-tune (its own architecture and vocabulary), on the GPU when there is one."""
    import torch

    from corpus.prepare import vocab_from
    from model import load_checkpoint
    from model.train import check_compatible

    if from_checkpoint is not None:
        model = load_checkpoint(from_checkpoint)
        check_compatible(model.cfg, cfg_train)
        return model.to("cuda" if torch.cuda.is_available() else "cpu")
    check_compatible(cfg, cfg_train)
    vocab, cfg = vocab_from(dataset, cfg)
    return _new_model(cfg, vocab, clip_weights, pretrained)


def _new_model(
    cfg: HANetCfg, vocab: ConceptVocab, clip_weights: Path | None, pretrained: str | None
) -> HANet:
    """HANet for ``cfg`` with ``vocab``, from open_clip weights when given (a file, or what
    open_clip's registry names), on the GPU when there is one."""
    import torch

    from model import HANet
    from model.backbone import load_clip_weights

    if pretrained is not None:
        from model.pretrained import from_open_clip, load_open_clip

        model = from_open_clip(cfg, load_open_clip(cfg, pretrained), vocab)
    else:
        model = HANet(cfg, vocab)
    if clip_weights is not None:
        load_clip_weights(model.clip, clip_weights)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="HANet checkpoint.")],
    data: Annotated[str, typer.Option(help="Dataset (as for hanet train).")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    video_dir: Annotated[str | None, typer.Option(help="Video folder (MSR-VTT, VATEX).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Decoded-frame cache folder.")] = None,
    served_frames: ServedFrames = False,
) -> None:
    """The paper's retrieval metrics in both directions, with an ablation over levels."""
    import torch

    from corpus.datasets import DatasetError, load_dataset
    from corpus.prepare import hard_pairs, split_data
    from model import CheckpointError, load_checkpoint
    from model.evaluate import evaluate as run_evaluation

    try:
        model = load_checkpoint(checkpoint)
        dataset = load_dataset(data, video_dir)
        data_split, items = split_data(
            dataset, split, model.cfg, None, cache_dir, served=served_frames
        )
    except (CheckpointError, DatasetError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if torch.cuda.is_available():
        model.to("cuda")
    result = run_evaluation(
        model,
        data_split.frames,
        data_split.mask,
        data_split.captions,
        hard_pairs(items),
        with_ranks=json_out is not None,  # per-caption ranks: for intervals (model.bootstrap)
        following=data_split.following,
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


def eval_moments(
    checkpoint: Annotated[Path, typer.Option(help="HANet checkpoint.")],
    data: Annotated[Path, typer.Option(help="A long corpus (hanet synth --long): its folder.")],
    work_dir: Annotated[Path, typer.Option(help="Database and index of each mode (reused).")],
    split: Annotated[str, typer.Option(help="Split whose captions are the queries.")] = "test",
    mode: Annotated[
        list[str] | None,
        typer.Option(help="hanet, global, windows or whole; repeat for several (default hanet)."),
    ] = None,
    min_s: Annotated[float, typer.Option(help="Shortest segment, seconds.")] = 2.0,
    max_s: Annotated[float, typer.Option(help="Longest segment, seconds.")] = 12.0,
    window_s: Annotated[float, typer.Option(help="Window for long shots, seconds.")] = 6.0,
    overlap_s: Annotated[float, typer.Option(help="Window overlap, seconds.")] = 3.0,
    per_event: Annotated[
        int | None, typer.Option(min=1, help="Captions asked per event (default: all).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here.")] = None,
) -> None:
    """Moment retrieval over a long-video corpus through the served path (indexer segments,
    search engine): corpus moment R@K at IoU 0.5 / 0.7, video R@K, localisation given the
    video; one row per mode."""
    from indexer.segments import SegmentCfg
    from model import CheckpointError, load_checkpoint
    from service.moment_eval import MODES, evaluate_moments

    modes = mode or ["hanet"]
    if unknown := [m for m in modes if m not in MODES]:
        raise typer.BadParameter(f"unknown mode {unknown[0]!r}; modes: {', '.join(MODES)}")
    manifest = data / "manifest.json" if data.is_dir() else data
    try:
        model = load_checkpoint(checkpoint)
        segments = SegmentCfg(min_s=min_s, max_s=max_s, window_s=window_s, overlap_s=overlap_s)
    except (CheckpointError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    reports = []
    for m in modes:  # each mode's report written as soon as it is done
        reports.append(
            evaluate_moments(
                model,
                manifest,
                work_dir,
                split=split,
                mode=m,
                segments=segments,
                per_event=per_event,
            )
        )
        if json_out:
            json_out.write_text(json.dumps(reports, indent=1))
    typer.echo(format_moments(reports))


def format_moments(reports: list[dict]) -> str:
    """One line per mode: corpus moment R@1/5/10 at IoU 0.5 and 0.7, video R@1/5/10, and
    localisation mIoU and R@1 at 0.5 / 0.7 given the video."""
    head = (
        f"{'mode':8s} {'units':>6s} | moment R@1/5/10 IoU>=0.5 | IoU>=0.7 | video R@1/5/10 | "
        "given the video: mIoU R1@0.5 R1@0.7"
    )
    lines = [head]
    for r in reports:
        c5, c7 = r["corpus"]["IoU>=0.5"], r["corpus"]["IoU>=0.7"]
        v, loc = r["video"], r["localisation"]

        def trio(d: dict) -> str:
            return "/".join(f"{d[f'R@{k}']:.1f}" for k in (1, 5, 10))

        lines.append(
            f"{r['mode']:8s} {r['units']:6d} | {trio(c5):>24s} | {trio(c7):>8s} | "
            f"{trio(v):>14s} | {loc['mIoU']:.1f} {loc['R@1']['IoU>=0.5']:.1f} "
            f"{loc['R@1']['IoU>=0.7']:.1f}"
        )
    r = reports[0]
    lines.append(f"{r['queries']} queries ({r['split']}) over {r['corpus_videos']} videos")
    return "\n".join(lines)
