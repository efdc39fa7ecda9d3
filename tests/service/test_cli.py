"""The ``hanet`` command line, run as a user runs it."""

from __future__ import annotations

import sqlite3

import open_clip
import torch
from typer.testing import CliRunner

from model import get_config, load_checkpoint
from model.config import GLOBAL_ONLY_FUSION
from service.cli import app

runner = CliRunner()


def test_db_upgrade_creates_the_schema_in_the_data_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HANET_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    db = tmp_path / "data" / "hanet.sqlite3"
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master")}
    assert "videos" in tables and "alembic_version" in tables


def test_bad_settings_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("HANET_LOG_LEVEL", "LOUD")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code != 0
    assert "log level" in result.output


def test_init_from_open_clip_weights(tmp_path) -> None:
    weights = tmp_path / "clip.pt"
    torch.save(open_clip.CLIP(**get_config("tiny").clip).state_dict(), weights)
    out = tmp_path / "hanet.pt"
    result = runner.invoke(
        app, ["init", "--arch", "tiny", "--clip-weights", str(weights), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out)
    assert model.cfg.fusion == GLOBAL_ONLY_FUSION
    assert torch.equal(model.clip.visual.proj, torch.load(weights)["visual.proj"])


def test_init_with_a_wrong_weights_file_says_why(tmp_path) -> None:
    weights = tmp_path / "clip.pt"
    torch.save(open_clip.CLIP(**get_config("tiny").clip).state_dict(), weights)
    result = runner.invoke(
        app,
        [
            "init",
            "--arch",
            "ViT-B-32",
            "--clip-weights",
            str(weights),
            "--out",
            str(tmp_path / "x.pt"),
        ],
    )
    assert result.exit_code != 0
    assert "cannot load CLIP weights" in result.output
    assert not (tmp_path / "x.pt").exists()


def test_demo_indexes_the_corpus_once_and_searches(tmp_path, monkeypatch) -> None:
    """`make demo` without the server: corpus, queue, index with the bundled model, a search;
    a second run reuses everything and indexes nothing."""
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HANET_DATABASE_URL", raising=False)
    monkeypatch.delenv("HANET_CHECKPOINT", raising=False)
    first = runner.invoke(app, ["demo", "--videos", "4", "--no-serve"])
    assert first.exit_code == 0, first.output
    assert "indexed 4 new videos" in first.output and "4 searchable, 0 failed" in first.output
    assert "which ranks" in first.output and "  1. video " in first.output
    again = runner.invoke(app, ["demo", "--videos", "4", "--no-serve"])
    assert again.exit_code == 0, again.output
    assert "indexed 0 new videos" in again.output and "4 searchable" in again.output
    assert len(list((tmp_path / "data" / "demo-corpus" / "videos").iterdir())) == 4
