"""Training (spec section 5): end to end, or on cached frame features with a frozen backbone.

Model selection and early stopping on validation rsum; resumable from the state saved after
every epoch; the GPU (bf16 autocast) when one is present. The caller builds the model (with its
concept vocabulary) and the tensors; this module knows nothing of files or video formats.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from model.backbone import autocast, encode_tokens
from model.batches import Pair, epoch_batches, true_negatives
from model.config import GLOBAL_ONLY_FUSION, SPEC_FUSION, HANetCfg
from model.embeddings import TextEmbeddings, VideoEmbeddings
from model.evaluate import evaluate
from model.hanet import HANet
from model.losses import LossWeights, contrast_hinge, hanet_loss, ranking_loss
from model.negatives import contrast_caption
from model.preprocess import normalize_frames
from model.train_cfg import TrainCfg

log = logging.getLogger(__name__)
__all__ = ["SplitData", "TrainCfg", "check_compatible", "prepare", "train"]


@dataclass
class SplitData:
    """frames (N, T, S, S, 3) uint8, mask (N, T), captions per video; targets per video per
    caption: ((verb_labels, verb_mask), (noun_labels, noun_mask)) lists, or None (no BCE)."""

    frames: Tensor
    mask: Tensor
    captions: list[list[str]]
    targets: list[list[tuple]] | None = None
    following: Tensor | None = None  # (N, T, S, S, 3): motion partners; None: the next frame
    # windows of long videos (corpus.windows): each clip's source video (its own id for a clip
    # that has none) and, per caption, the source event it tells (None: unknown)
    sources: list[str] | None = None
    caption_events: list[list[str | None]] | None = None


def check_compatible(model_cfg: HANetCfg, cfg: TrainCfg) -> None:
    """ValueError for settings that cannot train together."""
    if cfg.frozen_backbone and model_cfg.frame_extras:
        raise ValueError(
            "a frozen backbone trains on frame features cached once, so keypoints "
            "and a motion stream (computed with the frames) would stay untrained; "
            "train end to end for them"
        )
    if cfg.objective == "global-motion" and model_cfg.motion_levels != "all":
        raise ValueError(
            "the global-motion objective needs motion_levels 'all': with 'action' "
            "the temporal convolution never reaches the global score"
        )


def prepare(model: HANet, cfg: TrainCfg) -> HANet:
    """Set the fusion the objective selects with, and for the baselines fix the global pooling
    at the mean (its attention logits stay zero); "global" also keeps the frames without
    motion, "global-motion" trains it."""
    check_compatible(model.cfg, cfg)
    if cfg.objective != "hanet":
        model.cfg = model.cfg.with_fusion(GLOBAL_ONLY_FUSION)
        model.video.pool.requires_grad_(False)
        if model.video.motion is not None and cfg.objective == "global":
            model.video.motion.requires_grad_(False)  # meanP: frames pooled as they are
    elif model.cfg.fusion == GLOBAL_ONLY_FUSION:
        model.cfg = model.cfg.with_fusion(SPEC_FUSION)  # heads are about to be trained
    if cfg.frozen_backbone:
        model.clip.requires_grad_(False)
    return model


@torch.no_grad()
def cache_frame_features(model: HANet, data: SplitData, batch: int = 64) -> Tensor:
    """Backbone features of every frame, once (frozen-backbone mode): (N, T, Dc) float32."""
    out = []
    for i in range(0, len(data.frames), batch):
        pixels = normalize_frames(data.frames[i : i + batch], model.preprocess).to(model.device)
        with autocast(model.device):
            out.append(
                model.encode_frames(pixels, data.mask[i : i + batch].to(model.device)).float()
            )
    return torch.cat(out)


def _batch_targets(data: SplitData, videos: list[int], picks: list[int], device) -> dict | None:
    if data.targets is None:
        return None
    rows = [data.targets[v][c] for v, c in zip(videos, picks, strict=True)]
    return {
        part: tuple(torch.tensor([r[i][j] for r in rows], device=device) for j in range(2))
        for i, part in enumerate(("verb", "noun"))
    }


def _batch_texts(
    cfg: TrainCfg, data: SplitData, batch: list[Pair], rng: random.Random
) -> tuple[list[int], list[int], list[str], list[int]]:
    """The batch's videos, caption picks (drawn now where the plan left them open), texts (the
    captions, then any contrast captions) and, per contrast caption, the row of its video."""
    videos = [v for v, _ in batch]
    picks = [rng.randrange(len(data.captions[v])) if c is None else c for v, c in batch]
    texts = [data.captions[v][c] for v, c in zip(videos, picks, strict=True)]
    contrasts, video_of = [], []
    if cfg.hard_negatives:  # extra text rows B.. with no positive video in the batch
        for i, caption in enumerate(texts):
            contrast = contrast_caption(caption, rng)
            if contrast is not None:
                contrasts.append(contrast)
                video_of.append(i)
    return videos, picks, texts + contrasts, video_of


def _batch_scores(
    model: HANet, data: SplitData, videos: list[int], texts: list[str], features: Tensor | None
) -> tuple[dict[str, Tensor], VideoEmbeddings, TextEmbeddings]:
    """Every level's (texts, videos) scores in float32, and the embeddings they came from."""
    device = model.device
    mask = data.mask[videos].to(device)
    with autocast(device):
        if features is not None:
            video = model.encode_video_features(features[videos].to(device), mask)
            parsed = model.parse(texts).to(device)
            with torch.no_grad():
                tokens, sentence = encode_tokens(model.clip, parsed.token_ids, parsed.eot_index)
            text = model.text(tokens.float(), sentence.float(), parsed)
        else:
            pixels = normalize_frames(data.frames[videos], model.preprocess).to(device)
            following = None
            if data.following is not None:
                following = normalize_frames(data.following[videos], model.preprocess).to(device)
            video = model.encode_video(pixels, mask, following)
            text = model.encode_text(texts)
        scores = model.similarity(text, video)
    return {k: v.float() for k, v in scores.items()}, video, text


def _step_loss(
    model: HANet,
    cfg: TrainCfg,
    data: SplitData,
    batch: list[Pair],
    features: Tensor | None,
    rng: random.Random,
    hardest: bool = True,
) -> Tensor:
    """The loss of one batch of (video, caption) entries."""
    device = model.device
    videos, picks, texts, video_of = _batch_texts(cfg, data, batch, rng)
    b = len(videos)
    scores, video, text = _batch_scores(model, data, videos, texts, features)
    positives = torch.eye(b, dtype=torch.bool, device=device)
    events = None
    if data.caption_events is not None:
        told = [data.caption_events[v][c] for v, c in zip(videos, picks, strict=True)]
        events = (told, [set(data.caption_events[v]) for v in videos])
    negatives = true_negatives(videos, texts[:b], cfg.mask_duplicates, events).to(device)
    temperature = cfg.temperature if cfg.loss == "infonce" else None
    weights = LossWeights()
    if cfg.objective != "hanet":
        loss = ranking_loss(
            scores["global"][:b], positives, weights, hardest, negatives, temperature
        )
        contrast_level = "global"
    else:
        targets = _batch_targets(data, videos, picks, device)
        probs = {}
        if targets is not None:
            probs = {
                "video_verb": video.verb_probs,
                "video_noun": video.noun_probs,
                "text_verb": text.verb_probs[:b],
                "text_noun": text.noun_probs[:b],
            }
            probs = {k: v.float() for k, v in probs.items()}
        own = {k: v[:b] for k, v in scores.items()}
        parts = hanet_loss(
            own, positives, probs, targets or {}, weights, hardest, negatives, temperature
        )
        loss, contrast_level = parts["total"], "embedding"
    if video_of:
        index = torch.tensor(video_of, device=device)
        loss = loss + weights.contrast * contrast_hinge(
            scores[contrast_level], index, weights.margin
        )
    return loss


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass
class _Progress:
    """Where a training run stands; saved after every epoch, so a run can resume."""

    epoch: int = 0
    best: float = -math.inf
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    out_of_time: bool = False


def train(
    model: HANet,
    train_data: SplitData,
    val_data: SplitData,
    cfg: TrainCfg,
    work_dir: Path,
    out_path: Path,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place; the best validation checkpoint is written to ``out_path``.
    Returns the per-epoch history (also in ``work_dir/metrics.jsonl``)."""
    if cfg.group_batches and train_data.sources is None:
        raise ValueError(
            "group_batches needs windows of long videos (python -m corpus.windows): "
            "this corpus's clips name no source video"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / "train_state.pt"
    prepare(model, cfg)
    optimizer = torch.optim.Adam(_param_groups(model, cfg))
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    run = _Progress()
    if resume and state_path.exists():
        run = _resume(state_path, cfg, model, optimizer, rng)
    features = cache_frame_features(model, train_data) if cfg.frozen_backbone else None
    if cfg.validate_first and not run.history:  # the start as "epoch 0": it may stay the best
        _end_epoch(model, cfg, val_data, [], run, out_path, work_dir)
        _save_state(state_path, _state(model, optimizer, rng, run, cfg))
    while run.epoch < cfg.epochs and run.bad_epochs < cfg.patience and not run.out_of_time:
        losses = _train_epoch(model, cfg, train_data, features, optimizer, rng, run, progress)
        _end_epoch(model, cfg, val_data, losses, run, out_path, work_dir)
        _save_state(state_path, _state(model, optimizer, rng, run, cfg))
    return run.history


def _param_groups(model: HANet, cfg: TrainCfg) -> list[dict]:
    """The trainable parameters in two groups: the open_clip backbone at ``backbone_lr`` (when
    set) and everything else, the heads, at ``lr``. Each group keeps its peak rate in
    "peak_lr", which the schedule scales."""
    backbone = {id(p) for p in model.clip.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone_lr = cfg.lr if cfg.backbone_lr is None else cfg.backbone_lr
    groups = [
        ("backbone", [p for p in trainable if id(p) in backbone], backbone_lr),
        ("heads", [p for p in trainable if id(p) not in backbone], cfg.lr),
    ]
    return [
        {"params": params, "lr": lr, "peak_lr": lr, "name": name}
        for name, params, lr in groups
        if params
    ]


def _resume(
    state_path: Path,
    cfg: TrainCfg,
    model: HANet,
    optimizer: torch.optim.Optimizer,
    rng: random.Random,
) -> _Progress:
    """The saved state loaded into the model, optimizer and random generators."""
    state = torch.load(state_path, map_location=model.device, weights_only=False)
    if state["train_cfg"] != asdict(cfg):
        raise ValueError("the saved training state used other settings; start afresh")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    run = _Progress(state["epoch"], state["best"], state["bad_epochs"], state["history"])
    run.elapsed_s = state["elapsed_s"]
    log.info("resumed after epoch %d (best rsum %.2f)", run.epoch, run.best)
    return run


def _train_epoch(
    model: HANet,
    cfg: TrainCfg,
    data: SplitData,
    features: Tensor | None,
    optimizer: torch.optim.Optimizer,
    rng: random.Random,
    run: _Progress,
    progress: bool,
) -> list[float]:
    """One pass over the training set (``cfg.epoch_unit``: its videos or its pairs) in shuffled
    batches; the batches' losses. Stops early (``run.out_of_time``) when the time budget runs
    out."""
    model.train()
    start = time.monotonic()
    groups = data.sources if cfg.group_batches else None
    batches = epoch_batches(data.captions, cfg.batch_size, cfg.epoch_unit, rng, groups)
    total, warmup = cfg.epochs * len(batches), round(cfg.lr_warmup_epochs * len(batches))
    losses = []
    bar = tqdm(batches, desc=f"epoch {run.epoch + 1}", unit="batch", disable=not progress)
    for step, batch in enumerate(bar, start=run.epoch * len(batches)):
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * cfg.lr_factor(step, total, warmup)
        hardest = run.epoch >= cfg.warmup_epochs
        loss = _step_loss(model, cfg, data, batch, features, rng, hardest)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if cfg.time_budget_s and run.elapsed_s + time.monotonic() - start > cfg.time_budget_s:
            run.out_of_time = True
            break
    run.elapsed_s += time.monotonic() - start
    run.epoch += 1
    return losses


def _end_epoch(
    model: HANet,
    cfg: TrainCfg,
    val_data: SplitData,
    losses: list[float],
    run: _Progress,
    out_path: Path,
    work_dir: Path,
) -> None:
    """Validate, keep the checkpoint when it is the best so far, and log the epoch (epoch 0:
    the model before any training)."""
    metrics = evaluate(
        model, val_data.frames, val_data.mask, val_data.captions, following=val_data.following
    )
    record = {
        "epoch": run.epoch,
        "loss": sum(losses) / len(losses) if losses else None,  # None: before training
        "val_rsum": metrics["rsum"],
        "val_t2v_R@1": metrics["t2v"]["R@1"],
        "elapsed_s": round(run.elapsed_s, 1),
    }
    run.history.append(record)
    if metrics["rsum"] > run.best:
        run.best, run.bad_epochs = metrics["rsum"], 0
        model.save(str(out_path), torch.float16 if cfg.save_half else None)
        record["saved"] = True
    else:
        run.bad_epochs += 1
    log.info("epoch %d: %s", run.epoch, json.dumps(record))
    with open(work_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _state(
    model: HANet,
    optimizer: torch.optim.Optimizer,
    rng: random.Random,
    run: _Progress,
    cfg: TrainCfg,
) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": run.epoch,
        "best": run.best,
        "bad_epochs": run.bad_epochs,
        "history": run.history,
        "elapsed_s": run.elapsed_s,
        "rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
        "train_cfg": asdict(cfg),
    }
