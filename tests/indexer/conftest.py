"""The indexer's fixtures: a generated corpus (12 procedural videos and one file that is not a
video), tiny models with random weights (saved, so they have a checkpoint hash) and a queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

import migrations
from db import queue
from db.connect import make_engine
from model import ConceptVocab, HANet, create_model, get_config
from tests.conftest import CORPUS_VIDEOS

VIDEOS = CORPUS_VIDEOS  # decodable videos in the corpus; with broken.mp4, 13 files


@pytest.fixture(scope="session")
def corpus(synth_corpus, tmp_path_factory) -> Path:
    """The shared corpus without its text file: 12 videos and broken.mp4 (links, not copies)."""
    folder = tmp_path_factory.mktemp("idx") / "videos"
    folder.mkdir()
    for path in synth_corpus.iterdir():
        if path.name != "notes.mp4":
            (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture
def model(tmp_path) -> HANet:
    """A tiny model without a concept vocabulary."""
    m = create_model("tiny")
    m.save(str(tmp_path / "m.pt"))
    return m


@pytest.fixture
def vocab_model(tmp_path) -> HANet:
    """A tiny model with a concept vocabulary (verb0.., noun0..)."""
    cfg = get_config("tiny")
    vocab = ConceptVocab(
        tuple(f"verb{i}" for i in range(cfg.num_verbs)),
        tuple(f"noun{i}" for i in range(cfg.num_nouns)),
    )
    m = HANet(cfg, vocab).eval()
    m.save(str(tmp_path / "vocab.pt"))
    return m


@pytest.fixture
def fill(tmp_path, corpus) -> Callable[..., Engine]:
    """``fill(url=None)``: a migrated database (SQLite under tmp_path by default) with every
    corpus file queued in name order, so that ids 1, 2, ... are broken.mp4, synth000000.mp4, ..."""

    def make(url: str | None = None) -> Engine:
        url = url or f"sqlite:///{tmp_path / 'db.sqlite3'}"
        migrations.upgrade(url)
        engine = make_engine(url)
        for i, path in enumerate(sorted(corpus.iterdir())):
            queue.enqueue(engine, media_path=str(path), sha256=f"{i:064d}")
        return engine

    return make
