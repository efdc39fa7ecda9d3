"""hanet synth -> hanet train -> hanet eval, as a user runs them."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import get_type_hints

import pytest
import torch
import typer
from typer.testing import CliRunner

from model import get_config, load_checkpoint
from model.config import HANetCfg
from model.train import TrainCfg
from service.cli import app
from service.cli.config_options import train_settings

pytestmark = pytest.mark.slow  # every test here trains

runner = CliRunner()


def test_synth_train_eval(tmp_path) -> None:
    data = tmp_path / "corpus"
    result = runner.invoke(
        app, ["synth", "--out", str(data), "--videos", "40", "--seed", "5", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "m.pt"
    args = ["--data", str(data), "--out", str(out), "--work-dir", str(tmp_path / "w")]
    result = runner.invoke(
        app,
        [
            "train",
            *args,
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--motion-levels",
            "all",
            "--lr-schedule",
            "cosine",
            "--hard-negatives",
            "--keypoints",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).cfg.motion_levels == "all"
    assert load_checkpoint(out).cfg.keypoints == 2
    state = torch.load(tmp_path / "w" / "train_state.pt", weights_only=False)
    assert state["train_cfg"]["hard_negatives"] and state["train_cfg"]["lr_schedule"] == "cosine"
    report = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(out),
            "--data",
            str(data),
            "--split",
            "test",
            "--json",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    assert set(metrics) >= {"t2v", "v2t", "rsum", "ablation"}
    assert set(metrics["t2v"]) == {"R@1", "R@5", "R@10", "MedR", "MeanR"}
    assert {"global", "global+individual", "global+local", "full"} <= set(metrics["ablation"])
    assert "mirrored" in metrics["hard"]
    ranks = metrics["t2v_ranks"]  # per caption, for intervals: they give the summary back
    assert (
        min(ranks) >= 1
        and round(100 * sum(r <= 5 for r in ranks) / len(ranks), 2) == (metrics["t2v"]["R@5"])
    )
    assert "model (fused)" in result.output


def test_train_with_unknown_split_or_data_says_why(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "m.pt"),
            "--work-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "cannot read" in result.output
    for option, value in (
        ("--motion-levels", "event"),
        ("--lr-schedule", "step"),
        ("--epoch-unit", "frames"),
        ("--loss", "triplet"),
        ("--text-graph", "full"),
    ):
        result = runner.invoke(
            app,
            [
                "train",
                "--data",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "m.pt"),
                "--work-dir",
                str(tmp_path),
                option,
                value,
            ],
        )
        assert result.exit_code != 0 and value in result.output, result.output


REQUIRED = ("--data", "d", "--out", "m.pt", "--work-dir", "w")


def _train_command():
    return typer.main.get_command(app).commands["train"]


def _train_options() -> dict:
    command = _train_command()
    params = command.get_params(typer.Context(command))
    return {p.name: p for p in params if p.param_type_name == "option"}


def _accepts(*args: str) -> bool:
    """Whether ``hanet train`` takes these options (beside the required ones)."""
    try:
        _train_command().make_context("train", [*REQUIRED, *args])
    except typer.BadParameter:
        return False
    return True


def test_train_options_are_the_training_config_fields() -> None:
    """Every TrainCfg field is an option with the field's default, help and smallest value
    (time_budget_s in minutes); the option names scripts use stay."""
    options = _train_options()
    flags = {o.opts[0] for o in options.values()}
    assert flags == set(
        "--data --out --work-dir --arch --clip-weights --video-dir --resume --motion-levels "
        "--keypoints --motion-stream --epochs --batch-size --lr --patience --objective "
        "--frozen-backbone --time-budget-min --seed --save-half --warmup-epochs --lr-schedule "
        "--hard-negatives --help --text-graph --backbone-lr --epoch-unit --mask-duplicates "
        "--validate-first --loss --temperature --lr-warmup-epochs --pretrained --from-checkpoint "
        "--served-frames --group-batches".split()
    )
    types = get_type_hints(TrainCfg)
    for f in fields(TrainCfg):
        option = options["time_budget_min" if f.name == "time_budget_s" else f.name]
        assert option.help == f.metadata["help"]
        assert option.default == f.default
        if types[f.name] in (int, float, float | None):
            smallest = f.metadata.get("min")
            if smallest is None:
                assert _accepts(option.opts[0], "-1")
            else:
                assert _accepts(option.opts[0], str(smallest))
                assert not _accepts(option.opts[0], str(smallest - 1))
    minimums = {f.name: f.metadata.get("min") for f in fields(TrainCfg)}
    assert minimums["epochs"] == 1 and minimums["batch_size"] == 2 and minimums["lr"] == 0.0
    assert minimums["patience"] == 1 and minimums["warmup_epochs"] == 0
    for name in ("text_graph", "motion_levels", "keypoints", "motion_stream"):
        assert name in {f.name for f in fields(HANetCfg)} and options[name].default is None
    for flag in ("--keypoints", "--motion-stream"):
        assert _accepts(flag, "0") and not _accepts(flag, "-1")


def test_train_options_make_the_configs() -> None:
    defaults = _train_command().make_context("train", list(REQUIRED)).params
    assert train_settings("tiny", defaults) == (TrainCfg(), get_config("tiny"))
    given = (
        _train_command()
        .make_context(
            "train",
            [
                *REQUIRED,
                *("--time-budget-min", "2", "--warmup-epochs", "3", "--lr-schedule", "cosine"),
                *("--save-half", "--hard-negatives", "--epochs", "7", "--keypoints", "2"),
                *("--backbone-lr", "1e-6", "--epoch-unit", "pairs", "--no-mask-duplicates"),
                *("--no-validate-first", "--loss", "infonce", "--temperature", "0.02"),
                *("--lr-warmup-epochs", "0.5", "--text-graph", "extended"),
            ],
        )
        .params
    )
    cfg_train, cfg = train_settings("tiny", given)
    assert cfg_train == TrainCfg(
        time_budget_s=120.0,
        warmup_epochs=3,
        lr_schedule="cosine",
        save_half=True,
        hard_negatives=True,
        epochs=7,
        backbone_lr=1e-6,
        epoch_unit="pairs",
        mask_duplicates=False,
        validate_first=False,
        loss="infonce",
        temperature=0.02,
        lr_warmup_epochs=0.5,
    )
    expected = {**get_config("tiny").to_dict(), "keypoints": 2, "text_graph": "extended"}
    assert cfg == HANetCfg.from_dict(expected)


def test_train_options_with_pretrained_use_open_clips_config() -> None:
    """--pretrained makes --arch an open_clip architecture, its config from open_clip's."""
    from model.pretrained import hanet_config

    defaults = _train_command().make_context("train", list(REQUIRED)).params
    cfg_train, cfg = train_settings("ViT-B-32", defaults, "openai")
    assert cfg == hanet_config("ViT-B-32", "openai") and cfg.clip["quick_gelu"] is True
    assert cfg_train == TrainCfg()
    result = runner.invoke(
        app, ["train", *REQUIRED, "--arch", "ViT-H-14-quickgelu", "--pretrained", "dfn5b"]
    )
    assert result.exit_code != 0 and "not supported" in result.output, result.output


def test_train_refuses_values_below_the_field_minimum(tmp_path) -> None:
    args = ["--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--work-dir", str(tmp_path)]
    for option in ("--epochs", "--patience"):
        result = runner.invoke(app, ["train", *args, option, "0"])
        assert result.exit_code == 2 and option in result.output, result.output
