"""Training options where the reference code differs from the first training loop: separate
learning rates, pairs per epoch, duplicates left out of the negatives, validation before the
first epoch, a warm-up with cosine decay, and InfoNCE beside the hinge."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import HANet, load_checkpoint
from model.batches import epoch_batches, true_negatives
from model.evaluate import evaluate
from model.losses import infonce
from model.train import SplitData, TrainCfg, _step_loss, prepare, train

CAPTIONS = [["a", "b", "c"], ["d"], ["e", "f"], ["g", "h", "i", "j"]]


def test_pairs_epoch_takes_every_pair_once_and_videos_each_video_once() -> None:
    pairs = epoch_batches(CAPTIONS, 4, "pairs", random.Random(0))
    flat = [entry for batch in pairs for entry in batch]
    expected = [(v, c) for v, caps in enumerate(CAPTIONS) for c in range(len(caps))]
    assert sorted(flat) == expected and [len(b) for b in pairs] == [4, 4, 2]
    videos = epoch_batches(CAPTIONS, 4, "videos", random.Random(0))
    assert sorted(v for batch in videos for v, c in batch) == [0, 1, 2, 3]
    assert all(c is None for batch in videos for _, c in batch)  # drawn when used
    # 10 pairs in threes: the last, single pair has no negatives and is left out
    assert [len(b) for b in epoch_batches(CAPTIONS, 3, "pairs", random.Random(0))] == [3, 3, 3]
    with pytest.raises(ValueError, match="epoch unit"):
        epoch_batches(CAPTIONS, 3, "captions", random.Random(0))


def test_true_negatives_leave_out_the_same_video_and_the_same_text() -> None:
    videos, texts = [0, 1, 0, 2], ["a man runs", "a dog", "a man walks", "a dog"]
    negatives = true_negatives(videos, texts, mask_duplicates=True)
    not_negative = {(i, j) for i in range(4) for j in range(4) if not negatives[i, j]}
    diagonal = {(i, i) for i in range(4)}
    assert not_negative == diagonal | {(0, 2), (2, 0), (1, 3), (3, 1)}
    assert torch.equal(true_negatives(videos, texts, False), ~torch.eye(4, dtype=torch.bool))


def test_infonce_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5], [0.4, 0.6, 0.7]])
    eye = torch.eye(3, dtype=torch.bool)
    t = 0.1
    target = torch.arange(3)
    expected = 0.5 * (F.cross_entropy(scores / t, target) + F.cross_entropy(scores.T / t, target))
    assert infonce(scores, eye, t).item() == pytest.approx(expected.item(), rel=1e-6)
    # a pair left out of the negatives takes no part in either direction
    negatives = ~eye
    negatives[0, 2] = False
    t2v0 = -math.log(math.exp(9) / (math.exp(9) + math.exp(1)))  # text 0: videos 0 and 1 only
    v2t2 = -math.log(math.exp(7) / (math.exp(5) + math.exp(7)))  # video 2: texts 1 and 2 only
    rows = [t2v0] + [
        F.cross_entropy(scores[i : i + 1] / t, target[i : i + 1]).item() for i in (1, 2)
    ]
    cols = [F.cross_entropy(scores.T[j : j + 1] / t, target[j : j + 1]).item() for j in (0, 1)]
    expected = 0.5 * (sum(rows) / 3 + (sum(cols) + v2t2) / 3)
    assert infonce(scores, eye, t, negatives).item() == pytest.approx(expected, rel=1e-5)


def test_lr_warmup_then_cosine_decay() -> None:
    cfg = TrainCfg(lr=1e-3, lr_schedule="cosine")
    factors = [cfg.lr_factor(s, 12, warmup_steps=4) for s in range(12)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear from 0
    assert factors[4] == pytest.approx(1.0)  # the cosine starts at the peak
    assert factors[8] == pytest.approx(0.5)  # half way through the 8 decay steps
    assert cfg.lr_factor(12, 12, 4) == pytest.approx(0.0, abs=1e-12)
    constant = TrainCfg(lr=1e-3)
    assert [constant.lr_factor(s, 12, 4) for s in (1, 4, 11)] == [0.5, 1.0, 1.0]


def _eval_loss(model: HANet, cfg: TrainCfg, data: SplitData, batch: list) -> float:
    model.eval()
    with torch.no_grad():
        return _step_loss(model, cfg, data, batch, None, random.Random(0)).item()


def test_duplicates_change_the_loss_exactly_when_present(corpus: dict) -> None:
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    data = corpus["train"]
    texts = {(v, c): t for v, caps in enumerate(data.captions) for c, t in enumerate(caps)}
    for loss in ("hinge", "infonce"):
        on = TrainCfg(loss=loss)
        off = replace(on, mask_duplicates=False)
        prepare(model, on)
        distinct = [(v, 0) for v in range(8)]
        assert len({texts[e] for e in distinct}) == 8
        assert _eval_loss(model, on, data, distinct) == _eval_loss(model, off, data, distinct)
        # the same video twice (two of its captions, as a pairs epoch can draw)
        twice = distinct + [(0, 1)]
        assert _eval_loss(model, on, data, twice) != _eval_loss(model, off, data, twice)
    # two videos with one caption text
    shared = SplitData(data.frames, data.mask, [list(c) for c in data.captions], data.targets)
    shared.captions[1][0] = shared.captions[0][0]
    on, off = TrainCfg(), TrainCfg(mask_duplicates=False)
    same_text = [(v, 0) for v in range(8)]
    assert _eval_loss(model, on, shared, same_text) != _eval_loss(model, off, shared, same_text)
    assert _eval_loss(model, on, shared, same_text) < _eval_loss(model, off, shared, same_text)


@pytest.mark.slow
def test_backbone_learning_rate_is_its_own(corpus: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    heads_before = {k: v.clone() for k, v in model.text.state_dict().items()}
    cfg = TrainCfg(epochs=1, batch_size=16, lr=1e-3, backbone_lr=0.0, validate_first=False)
    train(model, corpus["train"], corpus["val"], cfg, tmp_path, tmp_path / "m.pt", progress=False)
    assert all(torch.equal(v, clip_before[k]) for k, v in model.clip.state_dict().items())
    assert any(not torch.equal(v, heads_before[k]) for k, v in model.text.state_dict().items())
    groups = torch.load(tmp_path / "train_state.pt", weights_only=False)["optimizer"]
    rates = {g["name"]: (g["peak_lr"], g["lr"]) for g in groups["param_groups"]}
    assert rates == {"backbone": (0.0, 0.0), "heads": (1e-3, 1e-3)}


@pytest.mark.slow
def test_pairs_epoch_steps_once_per_batch_of_pairs(corpus: dict, tmp_path: Path) -> None:
    data = corpus["train"]
    pairs = sum(len(c) for c in data.captions)
    assert pairs > len(data.captions)  # several captions per video: the units differ
    for unit, entries in (("pairs", pairs), ("videos", len(data.captions))):
        torch.manual_seed(0)
        cfg = TrainCfg(
            epochs=1, batch_size=16, epoch_unit=unit, frozen_backbone=True, validate_first=False
        )
        work = tmp_path / unit
        train(
            HANet(corpus["cfg"], corpus["vocab"]),
            data,
            corpus["val"],
            cfg,
            work,
            work / "m.pt",
            progress=False,
        )
        state = torch.load(work / "train_state.pt", weights_only=False)["optimizer"]["state"]
        steps = Counter(int(s["step"]) for s in state.values())
        batches = len([i for i in range(0, entries, 16) if entries - i > 1])
        assert set(steps) == {batches}, unit


@pytest.mark.slow
def test_epoch_zero_validation_can_be_the_kept_checkpoint(corpus: dict, tmp_path: Path) -> None:
    """The global objective at learning rate 0 cannot improve on the start: the checkpoint kept
    is epoch 0's (its BatchNorm statistics, which training still moves, show it)."""
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    cfg = TrainCfg(epochs=2, batch_size=16, lr=0.0, objective="global")
    prepare(model, cfg)
    start_rsum = evaluate(model, corpus["val"].frames, corpus["val"].mask, corpus["val"].captions)
    start_stats = model.video.verb_classifier.norm.running_mean.clone()
    history = train(
        model, corpus["train"], corpus["val"], cfg, tmp_path, tmp_path / "m.pt", progress=False
    )
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert history[0]["saved"] and history[0]["val_rsum"] == start_rsum["rsum"]
    assert not any(r.get("saved") for r in history[1:])  # equal, never better
    kept = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(kept.video.verb_classifier.norm.running_mean, start_stats)
    assert not torch.equal(model.video.verb_classifier.norm.running_mean, start_stats)
    without = train(
        HANet(corpus["cfg"], corpus["vocab"]),
        corpus["train"],
        corpus["val"],
        replace(cfg, epochs=1, validate_first=False),
        tmp_path / "b",
        tmp_path / "b" / "m.pt",
        progress=False,
    )
    assert [r["epoch"] for r in without] == [1]


@pytest.mark.slow
def test_infonce_with_warmup_and_cosine_trains(corpus: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    cfg = TrainCfg(
        epochs=4,
        batch_size=16,
        lr=1e-3,
        backbone_lr=1e-4,
        loss="infonce",
        temperature=0.05,
        lr_warmup_epochs=1,
        lr_schedule="cosine",
        epoch_unit="pairs",
    )
    prepare(model, cfg)
    batch = [(v, 0) for v in range(len(corpus["train"].captions))]
    before = _eval_loss(model, cfg, corpus["train"], batch)
    train(model, corpus["train"], corpus["val"], cfg, tmp_path, tmp_path / "m.pt", progress=False)
    after = _eval_loss(model, cfg, corpus["train"], batch)
    assert after < before * 0.9, (before, after)
    groups = torch.load(tmp_path / "train_state.pt", weights_only=False)["optimizer"]
    rates = {g["name"]: g["lr"] for g in groups["param_groups"]}
    # the last step's rate: both groups scaled by the same small cosine factor
    assert 0 < rates["backbone"] < 1e-5 and rates["heads"] == pytest.approx(10 * rates["backbone"])


def test_grouped_batches_hold_each_groups_members_together() -> None:
    captions = [["x"]] * 10
    groups = ["a", "b", "a", "c", "b", "a", "d", "c", "a", "b"]
    batches = epoch_batches(captions, 4, "videos", random.Random(1), groups)
    flat = [v for batch in batches for v, _ in batch]
    assert sorted(flat) == list(range(10))  # each video once
    keys = [groups[v] for v in flat]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert sorted(runs) == ["a", "b", "c", "d"]  # each group in one run
    again = epoch_batches(captions, 4, "videos", random.Random(1), groups)
    other = epoch_batches(captions, 4, "videos", random.Random(2), groups)
    assert again == batches and other != batches  # the rng decides the order
    with pytest.raises(ValueError, match="group keys"):
        epoch_batches(captions, 4, "videos", random.Random(1), groups[:3])


def test_true_negatives_leave_out_windows_that_show_the_told_event() -> None:
    # windows 0 and 1 overlap on event v#2; window 2 is elsewhere; clip 3 has no source
    videos, texts = [0, 1, 2, 3], ["a red circle", "a blue star", "a red circle jumps", "x"]
    told = ["v#2", "v#3", "v#5", None]
    shown = [{"v#1", "v#2"}, {"v#2", "v#3"}, {"v#5"}, {None}]
    negatives = true_negatives(videos, texts, True, (told, shown))
    not_negative = {(i, j) for i in range(4) for j in range(4) if not negatives[i, j]}
    assert not_negative == {(i, i) for i in range(4)} | {(0, 1)}  # caption 0 fits window 1
    unmasked = true_negatives(videos, texts, False, (told, shown))
    assert torch.equal(unmasked, ~torch.eye(4, dtype=torch.bool))


def test_grouped_batches_train_only_on_windows_with_sources(corpus: dict, tmp_path: Path) -> None:
    data = corpus["train"]
    cfg = TrainCfg(epochs=1, batch_size=16, frozen_backbone=True, validate_first=False)
    cfg = replace(cfg, group_batches=True)
    model = HANet(corpus["cfg"], corpus["vocab"])
    with pytest.raises(ValueError, match="corpus.windows"):
        train(model, data, corpus["val"], cfg, tmp_path / "none", tmp_path / "m.pt", progress=False)
    n = len(data.captions)
    grouped = replace(data, sources=[f"long{v % 5}" for v in range(n)])
    grouped.caption_events = [
        [f"long{v % 5}#{v // 5}"] * len(c) for v, c in enumerate(data.captions)
    ]
    work = tmp_path / "grouped"
    train(model, grouped, corpus["val"], cfg, work, work / "m.pt", progress=False)
    state = torch.load(work / "train_state.pt", weights_only=False)["optimizer"]["state"]
    batches = len([i for i in range(0, n, 16) if n - i > 1])
    assert {int(s["step"]) for s in state.values()} == {batches}  # every video, grouped
