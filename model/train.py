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
from model.config import GLOBAL_ONLY_FUSION, SPEC_FUSION, HANetCfg
from model.evaluate import evaluate
from model.hanet import HANet
from model.losses import LossWeights, contrast_hinge, hanet_loss, triplet_all, triplet_hardest
from model.negatives import contrast_caption
from model.preprocess import normalize_frames

log = logging.getLogger(__name__)
OBJECTIVES = ("hanet", "global", "global-motion")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainCfg:
    """Training settings (not architecture). ``objective`` "global" trains the CLIP4Clip
    "meanP"-style baseline: mean-pooled frames against the sentence, global score only (the
    temporal convolution stays at its zero start). "global-motion" is that baseline over
    motion-aware frames: the temporal convolution (with ``motion_levels`` "all", and any
    keypoints or motion stream) trains, the pooling stays the mean, the score the global one;
    a control that tells what the motion input gives from what the hierarchy gives.

    Each field's ``metadata`` says what it does (``help``) and, for numbers, its smallest useful
    value (``min``): ``hanet train`` builds its options from them."""

    epochs: int = field(
        default=50, metadata={"help": "Passes over the training set (at most).", "min": 1}
    )
    batch_size: int = field(
        default=64, metadata={"help": "Videos per step (each ranked against the others).", "min": 2}
    )
    lr: float = field(default=1e-4, metadata={"help": "Learning rate (Adam).", "min": 0.0})
    patience: int = field(
        default=10,
        metadata={
            "help": "Stop after this many epochs without a better validation rsum.",
            "min": 1,
        },
    )
    objective: str = field(
        default="hanet",
        metadata={
            "help": "hanet; global (the meanP baseline); or global-motion (that baseline with the "
            "temporal convolution trained: a control for the motion input)."
        },
    )
    frozen_backbone: bool = field(
        default=False, metadata={"help": "Cache frame features once; train the heads only."}
    )
    time_budget_s: float | None = field(
        default=None, metadata={"help": "Stop training after this long (none: no limit)."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed (weights, batches, captions)."})
    save_half: bool = field(
        default=False, metadata={"help": "Store weights as float16 (half the size)."}
    )
    warmup_epochs: int = field(
        default=0,
        metadata={
            "help": "Epochs ranking against every negative before the hardest only.",
            "min": 0,
        },
    )
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "constant (the spec's), or cosine: decays to 0 over the epochs."},
    )
    # not in the spec, off by default (model.negatives)
    hard_negatives: bool = field(
        default=False,
        metadata={
            "help": "Also rank each caption above a contrast caption made from it by one word "
            "swap (opposite direction or change, events reversed)."
        },
    )

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) of ``total``."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return self.lr


@dataclass
class SplitData:
    """frames (N, T, S, S, 3) uint8, mask (N, T), captions per video; targets per video per
    caption: ((verb_labels, verb_mask), (noun_labels, noun_mask)) lists, or None (no BCE)."""

    frames: Tensor
    mask: Tensor
    captions: list[list[str]]
    targets: list[list[tuple]] | None = None


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


def _step_loss(
    model: HANet,
    cfg: TrainCfg,
    data: SplitData,
    videos: list[int],
    features: Tensor | None,
    rng: random.Random,
    hardest: bool = True,
) -> Tensor:
    device = model.device
    picks = [rng.randrange(len(data.captions[v])) for v in videos]
    texts = [data.captions[v][c] for v, c in zip(videos, picks, strict=True)]
    b, contrasts, video_of = len(videos), [], []
    if cfg.hard_negatives:  # extra text rows B.. with no positive video in the batch
        for i, caption in enumerate(texts):
            contrast = contrast_caption(caption, rng)
            if contrast is not None:
                contrasts.append(contrast)
                video_of.append(i)
    texts = texts + contrasts
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
            video = model.encode_video(pixels, mask)
            text = model.encode_text(texts)
        scores = model.similarity(text, video)
    positives = torch.eye(b, dtype=torch.bool, device=device)
    weights = LossWeights()
    scores = {k: v.float() for k, v in scores.items()}
    if cfg.objective != "hanet":
        ranking = triplet_hardest if hardest else triplet_all
        loss = ranking(scores["global"][:b], positives, weights.margin)
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
        loss = hanet_loss(own, positives, probs, targets or {}, weights, hardest)["total"]
        contrast_level = "embedding"
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
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / "train_state.pt"
    prepare(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    run = _Progress()
    if resume and state_path.exists():
        run = _resume(state_path, cfg, model, optimizer, rng)
    features = cache_frame_features(model, train_data) if cfg.frozen_backbone else None
    while run.epoch < cfg.epochs and run.bad_epochs < cfg.patience and not run.out_of_time:
        losses = _train_epoch(model, cfg, train_data, features, optimizer, rng, run, progress)
        _end_epoch(model, cfg, val_data, losses, run, out_path, work_dir)
        _save_state(state_path, _state(model, optimizer, rng, run, cfg))
    return run.history


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
    """One pass over the training videos in shuffled batches; the batches' losses. Stops early
    (``run.out_of_time``) when the time budget runs out."""
    model.train()
    start = time.monotonic()
    n = len(data.frames)
    order = list(range(n))
    rng.shuffle(order)
    batches = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    batches = [b for b in batches if len(b) > 1]  # a ranking loss needs negatives
    losses = []
    bar = tqdm(batches, desc=f"epoch {run.epoch + 1}", unit="batch", disable=not progress)
    for step, videos in enumerate(bar, start=run.epoch * len(batches)):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step, cfg.epochs * len(batches))
        hardest = run.epoch >= cfg.warmup_epochs
        loss = _step_loss(model, cfg, data, videos, features, rng, hardest)
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
    """Validate, keep the checkpoint when it is the best so far, and log the epoch."""
    metrics = evaluate(model, val_data.frames, val_data.mask, val_data.captions)
    record = {
        "epoch": run.epoch,
        "loss": sum(losses) / max(1, len(losses)),
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
