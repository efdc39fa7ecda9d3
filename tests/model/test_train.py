"""Short training runs on a tiny generated corpus."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model import HANet, load_checkpoint
from model.negatives import contrast_edits
from model.train import SplitData, TrainCfg, _step_loss, prepare, train

pytestmark = pytest.mark.slow  # every test here trains


def _fixed_loss(model: HANet, cfg: TrainCfg, data: SplitData) -> float:
    model.eval()
    with torch.no_grad():
        batch = [(v, None) for v in range(len(data.frames))]  # each video, a random caption
        return _step_loss(model, cfg, data, batch, None, random.Random(0)).item()


def test_vocabulary_comes_from_training_captions(corpus: dict) -> None:
    vocab, cfg = corpus["vocab"], corpus["cfg"]
    assert {"move", "grow", "blink"} <= set(vocab.verbs)
    assert {"star", "circle", "square"} <= set(vocab.nouns)
    assert "video" not in vocab.nouns  # a stopword
    assert (cfg.num_verbs, cfg.num_nouns) == (len(vocab.verbs), len(vocab.nouns))


def test_training_lowers_the_loss_and_saves_the_best(corpus: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    cfg = TrainCfg(epochs=4, batch_size=16, lr=1e-3, patience=10)
    prepare(model, cfg)
    before = _fixed_loss(model, cfg, corpus["train"])
    history = train(
        model,
        corpus["train"],
        corpus["val"],
        cfg,
        tmp_path / "w",
        tmp_path / "best.pt",
        progress=False,
    )
    after = _fixed_loss(model, cfg, corpus["train"])
    assert after < before * 0.9, (before, after)
    assert len(history) == 5  # epoch 0 (validation before training) and four epochs
    assert history[0]["epoch"] == 0 and history[0]["loss"] is None
    assert any(r.get("saved") for r in history[1:])
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.vocab == corpus["vocab"]
    assert (tmp_path / "w" / "metrics.jsonl").read_text().count("\n") == 5


def test_resume_continues_where_it_stopped(corpus: dict, tmp_path: Path) -> None:
    cfg = TrainCfg(epochs=2, batch_size=16, lr=1e-3)
    torch.manual_seed(0)
    first = train(
        HANet(corpus["cfg"], corpus["vocab"]),
        corpus["train"],
        corpus["val"],
        cfg,
        tmp_path,
        tmp_path / "m.pt",
        progress=False,
    )
    more = TrainCfg(epochs=3, batch_size=16, lr=1e-3)
    with pytest.raises(ValueError, match="other settings"):
        train(
            HANet(corpus["cfg"], corpus["vocab"]),
            corpus["train"],
            corpus["val"],
            more,
            tmp_path,
            tmp_path / "m.pt",
            resume=True,
            progress=False,
        )
    again = train(
        HANet(corpus["cfg"], corpus["vocab"]),
        corpus["train"],
        corpus["val"],
        cfg,
        tmp_path,
        tmp_path / "m.pt",
        resume=True,
        progress=False,
    )
    assert again == first  # nothing left to do: the state says both epochs are done


def test_frozen_backbone_trains_only_the_heads(corpus: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    heads_before = {k: v.clone() for k, v in model.video.state_dict().items()}
    cfg = TrainCfg(epochs=1, batch_size=16, lr=1e-3, frozen_backbone=True)
    train(model, corpus["train"], corpus["val"], cfg, tmp_path, tmp_path / "m.pt", progress=False)
    assert all(torch.equal(v, clip_before[k]) for k, v in model.clip.state_dict().items())
    assert any(not torch.equal(v, heads_before[k]) for k, v in model.video.state_dict().items())


def test_frozen_backbone_refuses_what_its_cache_would_leave_untrained(
    corpus: dict, tmp_path: Path
) -> None:
    cfg = TrainCfg(epochs=1, batch_size=16, lr=1e-3, frozen_backbone=True)
    for extra in ({"keypoints": 2}, {"motion_stream": 8}):
        model = HANet(replace(corpus["cfg"], **extra), corpus["vocab"])
        with pytest.raises(ValueError, match="frozen backbone"):
            train(
                model,
                corpus["train"],
                corpus["val"],
                cfg,
                tmp_path,
                tmp_path / "m.pt",
                progress=False,
            )
    assert not (tmp_path / "m.pt").exists()


def test_global_baseline_keeps_mean_pooling(corpus: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    # with the shared temporal convolution, which would reach the global vector if trained
    model = HANet(replace(corpus["cfg"], motion_levels="all"), corpus["vocab"])
    cfg = TrainCfg(epochs=1, batch_size=16, lr=1e-3, objective="global")
    train(model, corpus["train"], corpus["val"], cfg, tmp_path, tmp_path / "m.pt", progress=False)
    assert model.video.pool.weight.abs().sum() == 0
    assert model.video.motion.weight.abs().sum() == 0  # meanP: no motion either
    assert model.video.event.weight.grad is not None  # while the projection did train
    assert load_checkpoint(tmp_path / "m.pt").cfg.fusion[0] == 1.0


def test_global_motion_control_trains_the_motion_input_under_mean_pooling(
    corpus: dict, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    cfg = TrainCfg(epochs=1, batch_size=16, lr=1e-3, objective="global-motion")
    with pytest.raises(ValueError, match="motion_levels"):
        train(
            HANet(replace(corpus["cfg"], motion_stream=4), corpus["vocab"]),
            corpus["train"],
            corpus["val"],
            cfg,
            tmp_path,
            tmp_path / "m.pt",
            progress=False,
        )
    model = HANet(replace(corpus["cfg"], motion_levels="all", motion_stream=4), corpus["vocab"])
    train(model, corpus["train"], corpus["val"], cfg, tmp_path, tmp_path / "m.pt", progress=False)
    assert model.video.pool.weight.abs().sum() == 0  # still the mean
    assert model.video.motion.weight.abs().sum() > 0  # the motion input trained
    assert model.motion_stream.out.weight.grad is not None
    assert model.video.action.weight.grad is None  # the global score alone: no other level
    assert load_checkpoint(tmp_path / "m.pt").cfg.fusion[0] == 1.0


def test_cosine_schedule_decays_the_learning_rate_to_zero(corpus: dict, tmp_path: Path) -> None:
    cfg = TrainCfg(epochs=2, batch_size=16, lr=1e-3, lr_schedule="cosine", frozen_backbone=True)
    assert cfg.lr_at(0, 10) == pytest.approx(1e-3)
    assert cfg.lr_at(5, 10) == pytest.approx(5e-4)
    assert cfg.lr_at(10, 10) == pytest.approx(0.0, abs=1e-12)
    assert TrainCfg(lr=1e-3).lr_at(9, 10) == 1e-3  # the spec's constant rate
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainCfg(lr_schedule="step")
    torch.manual_seed(0)
    train(
        HANet(corpus["cfg"], corpus["vocab"]),
        corpus["train"],
        corpus["val"],
        cfg,
        tmp_path,
        tmp_path / "m.pt",
        progress=False,
    )
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    n = len(corpus["train"].frames)
    steps = 2 * len([i for i in range(0, n, 16) if n - i > 1])  # batches of two or more
    last = state["optimizer"]["param_groups"][0]["lr"]
    assert last == pytest.approx(cfg.lr_at(steps - 1, steps)) and last < 1e-4


@pytest.mark.parametrize("objective", ["hanet", "global"])
def test_hard_negatives_add_contrast_captions_to_the_batch(
    corpus: dict, objective: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = HANet(corpus["cfg"], corpus["vocab"])
    plain = TrainCfg(objective=objective)
    prepare(model, plain)
    seen: list[list[str]] = []
    encode = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda texts: seen.append(texts) or encode(texts))
    without = _fixed_loss(model, plain, corpus["train"])
    with_hard = _fixed_loss(model, replace(plain, hard_negatives=True), corpus["train"])
    own, extended = seen
    n = len(corpus["train"].frames)
    assert own == extended[:n]  # the same captions picked, then one contrast caption each
    edits = [contrast_edits(t) for t in own]
    assert len(extended) - n == sum(1 for e in edits if e) > n // 4
    assert all(any(c in e for e in edits) for c in extended[n:])
    # untrained, a caption and its contrast score alike: each hinge is about the margin 0.2
    assert with_hard - without == pytest.approx(0.2, abs=0.05)
