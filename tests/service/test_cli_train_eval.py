"""hanet synth -> hanet train -> hanet eval, as a user runs them."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from model import load_checkpoint
from service.cli import app

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
    for option, value in (("--motion-levels", "event"), ("--lr-schedule", "step")):
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
