"""``hanet synth --long``, as a user runs it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def test_synth_long_writes_long_videos_and_their_manifest(tmp_path) -> None:
    out = tmp_path / "long"
    args = ["synth", "--out", str(out), "--videos", "2", "--seed", "1", "--workers", "1"]
    result = runner.invoke(app, [*args, "--long", "--min-minutes", "0.2", "--max-minutes", "0.4"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "hanet-long-dataset" and manifest["seed"] == 1
    videos = manifest["videos"]
    assert [v["id"] for v in videos] == ["long00000", "long00001"]
    assert all(12.0 <= v["duration_s"] <= 24.0 and v["events"] for v in videos)
    assert all((out / v["path"]).stat().st_size > 0 for v in videos)


def test_synth_long_refuses_a_minimum_above_the_maximum(tmp_path) -> None:
    args = ["synth", "--out", str(tmp_path / "x"), "--videos", "1", "--long"]
    result = runner.invoke(app, [*args, "--min-minutes", "3", "--max-minutes", "2"])
    assert result.exit_code == 2
    assert "--min-minutes" in result.output
    assert not (tmp_path / "x").exists()
