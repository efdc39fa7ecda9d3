"""The ``hanet`` command line, run as a user runs it."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from typer.testing import CliRunner

from model import get_config, load_checkpoint
from model.config import GLOBAL_ONLY_FUSION
from service.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_demo_indexes_the_corpus_once_and_searches(tmp_path, monkeypatch) -> None:
    """`make demo` without the server: corpus, queue, index with the bundled model, a search;
    a second run reuses everything and indexes nothing."""
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HANET_DATABASE_URL", raising=False)
    monkeypatch.delenv("HANET_CHECKPOINT", raising=False)
    args = ["demo", "--videos", "4", "--long-videos", "1", "--no-serve"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "indexed 5 new videos" in first.output and "5 searchable, 0 failed" in first.output
    assert first.output.count("which ranks") == 2 and "  1. video " in first.output
    assert "(it happens at " in first.output  # the long video's event, and the moments found
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "indexed 0 new videos" in again.output and "5 searchable" in again.output
    assert len(list((tmp_path / "data" / "demo-corpus" / "videos").iterdir())) == 4
    assert len(list((tmp_path / "data" / "demo-long" / "videos").iterdir())) == 1


def test_an_unknown_setting_is_warned_about_once(tmp_path, monkeypatch, caplog) -> None:
    """A typo such as HANET_TRHEADS, which pydantic-settings would skip silently."""
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HANET_DATABASE_URL", raising=False)
    monkeypatch.setenv("HANET_TRHEADS", "1")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "service.runtime" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "HANET_TRHEADS" in warnings[0], warnings
    assert "HANET_THREADS" in warnings[0]  # the known names, to spot the typo


@pytest.mark.slow
def test_the_entry_point_logs_the_warning_and_needs_no_torch_for_db_upgrade(tmp_path) -> None:
    """As a process: logging is configured before the settings are read, so their warning is
    formatted like every log line; the command line imports torch only for commands using it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANET_")}
    env.update(HANET_DATA_DIR=str(tmp_path / "data"), HANET_TRHEADS="1")
    code = (
        "import sys; from service.cli import app; "
        "app(['db', 'upgrade'], standalone_mode=False); print('torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert re.search(
        r"WARNING service\.runtime: ignoring unknown settings HANET_TRHEADS", run.stderr
    )
    assert run.stdout.splitlines() == [
        f"database at revision head: sqlite:///{(tmp_path / 'data').resolve()}/hanet.sqlite3",
        "False",
    ]


def test_an_old_schema_is_refused_without_auto_migrate(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HANET_DATABASE_URL", raising=False)
    monkeypatch.setenv("HANET_AUTO_MIGRATE", "false")
    result = runner.invoke(app, ["index", "status"])
    assert result.exit_code == 1
    assert "run `hanet db upgrade`" in result.output
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["index", "status"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "videos: pending 0, processing 0, indexed 0, failed 0",
        "build: none yet",
    ]
