"""Training settings (not architecture) and the learning-rate schedule they describe.

Each field's ``metadata`` says what it does (``help``) and, for numbers, its smallest useful
value (``min``): ``hanet train`` builds its options from them, so the command line cannot drift
from this class. Where a setting departs from the reference code (Roc-Ng/HANet), its help says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

OBJECTIVES = ("hanet", "global", "global-motion")
LR_SCHEDULES = ("constant", "cosine")
EPOCH_UNITS = ("videos", "pairs")
LOSSES = ("hinge", "infonce")


@dataclass(frozen=True)
class TrainCfg:
    """Training settings. ``objective`` "global" trains the CLIP4Clip "meanP"-style baseline:
    mean-pooled frames against the sentence, global score only (the temporal convolution stays
    at its zero start). "global-motion" is that baseline over motion-aware frames: the temporal
    convolution (with ``motion_levels`` "all", and any keypoints or motion stream) trains, the
    pooling stays the mean, the score the global one; a control that tells what the motion input
    gives from what the hierarchy gives."""

    epochs: int = field(
        default=50, metadata={"help": "Passes over the training set (at most).", "min": 1}
    )
    batch_size: int = field(
        default=64,
        metadata={
            "help": "(video, caption) pairs per step, each ranked against the others.",
            "min": 2,
        },
    )
    lr: float = field(
        default=1e-4,
        metadata={
            "help": "Learning rate (Adam) of the heads, and of the backbone unless --backbone-lr.",
            "min": 0.0,
        },
    )
    backbone_lr: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the open_clip backbone (none: --lr). Pretrained CLIP "
            "weights usually want a smaller one than the new heads.",
            "min": 0.0,
        },
    )
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
    epoch_unit: str = field(
        default="videos",
        metadata={
            "help": "videos: an epoch is each video once, with one of its captions at random; "
            "pairs: every (video, caption) pair once, as the reference code iterates."
        },
    )
    mask_duplicates: bool = field(
        default=True,
        metadata={
            "help": "Leave out of the negatives a batch's pairs that are not negatives: the same "
            "caption text of two videos, the same video twice (pairs). The reference counts them "
            "as negatives."
        },
    )
    group_batches: bool = field(
        default=False,
        metadata={
            "help": "Fill batches with whole long videos' windows (a corpus from corpus.windows), "
            "so the other windows of a clip's own video are among its negatives."
        },
    )
    validate_first: bool = field(
        default=True,
        metadata={
            "help": "Validate before the first epoch (recorded as epoch 0), so that the starting "
            "model, e.g. CLIP's zero-shot, can be the one kept."
        },
    )
    loss: str = field(
        default="hinge",
        metadata={
            "help": "hinge: the spec's ranking loss (margin 0.2, hardest negative); infonce: "
            "cross-entropy over the batch at --temperature, both directions."
        },
    )
    temperature: float = field(
        default=0.05,
        metadata={"help": "Softmax temperature of --loss infonce.", "min": 1e-4},
    )
    warmup_epochs: int = field(
        default=0,
        metadata={
            "help": "Epochs ranking against every negative before the hardest only (hinge loss; "
            "not a learning-rate warm-up: see --lr-warmup-epochs).",
            "min": 0,
        },
    )
    lr_warmup_epochs: float = field(
        default=0.0,
        metadata={
            "help": "Epochs over which the learning rate rises linearly from 0 before the "
            "--lr-schedule starts.",
            "min": 0.0,
        },
    )
    lr_schedule: str = field(
        default="constant",
        metadata={
            "help": "constant (the spec's), or cosine: decays to 0 over the epochs after the "
            "learning-rate warm-up."
        },
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
        for name, allowed in (
            ("objective", OBJECTIVES),
            ("lr_schedule", LR_SCHEDULES),
            ("epoch_unit", EPOCH_UNITS),
            ("loss", LOSSES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")

    def lr_factor(self, step: int, total: int, warmup_steps: int = 0) -> float:
        """The share of each group's learning rate at optimiser step ``step`` (0-based) of
        ``total``: a linear rise over the first ``warmup_steps`` steps, then the schedule
        (constant, or a cosine from 1 to 0 over the remaining steps)."""
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if self.lr_schedule == "cosine":
            span = max(total - warmup_steps, 1)
            done = min(step - warmup_steps, span)
            return 0.5 * (1 + math.cos(math.pi * done / span))
        return 1.0

    def lr_at(self, step: int, total: int, warmup_steps: int = 0) -> float:
        """The heads' learning rate at optimiser step ``step`` (0-based) of ``total``."""
        return self.lr * self.lr_factor(step, total, warmup_steps)
