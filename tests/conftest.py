from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
from pathlib import Path

import anyio
import pytest
import torch


def _import_anyio_up_front() -> None:
    """anyio imports its modules lazily, on whichever thread first needs one (the app's event
    loop serving a file, say). Under pytest every anyio module is assertion-rewritten, that is
    read with ``ast.parse``, and CPython 3.11's ast module is not thread-safe: a lazy import
    racing another thread's parse failed once with "SystemError: AST constructor recursion
    depth mismatch". Importing them here, before any test starts a thread, removes the race."""
    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        if "trio" not in module.name and "pytest" not in module.name:
            with contextlib.suppress(ImportError):
                importlib.import_module(module.name)


_import_anyio_up_front()


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


CORPUS_VIDEOS = 12  # decodable videos in ``synth_corpus``; with broken.mp4 and notes.mp4, 14 files


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """The videos folder of a procedural corpus generated once for the whole run (12 H.264
    videos, seed 4: synth000000.mp4 ...), plus two files that are not videos: broken.mp4
    (binary junk) and notes.mp4 (text). Shared: tests read it and never change it."""
    from corpus.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, CORPUS_VIDEOS, seed=4, workers=1, progress=False)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    (root / "videos" / "notes.mp4").write_text("not a video\n" * 20)
    return root / "videos"


@pytest.fixture(scope="session")
def vocab_checkpoint(tmp_path_factory) -> Path:
    """A tiny HANet with seeded random weights and a concept vocabulary (verb0.., noun0..),
    saved once for the whole run: the same weights whichever test asks first (session fixtures
    are made before a test's own seeding)."""
    import torch

    from model import ConceptVocab, HANet, get_config

    torch.manual_seed(0)

    cfg = get_config("tiny")
    vocab = ConceptVocab(
        tuple(f"verb{i}" for i in range(cfg.num_verbs)),
        tuple(f"noun{i}" for i in range(cfg.num_nouns)),
    )
    path = tmp_path_factory.mktemp("ckpt") / "tiny-vocab.pt"
    HANet(cfg, vocab).eval().save(str(path))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A database at the newest schema: a SQLite file, or (marked ``postgres``) the throwaway
    PostgreSQL database, emptied afterwards."""
    import migrations

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hanet.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrations.upgrade(url)
    yield url
    migrations.downgrade(url, "base")


@pytest.fixture
def postgres_url() -> str:
    """URL of a throwaway PostgreSQL database (``.ci/run`` makes one). Skipped without it,
    except where HANET_REQUIRE_POSTGRES is set (CI), where a missing URL is a failure."""
    url = os.environ.get("HANET_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("HANET_REQUIRE_POSTGRES"):
            pytest.fail("HANET_REQUIRE_POSTGRES is set but HANET_TEST_DATABASE_URL is not")
        pytest.skip("HANET_TEST_DATABASE_URL is not set (run .ci/run for the Postgres tests)")
    return url


def require_executable(name: str, install: str) -> str:
    """Path of a Debian tool a test needs. Skipped without it, except where HANET_REQUIRE_TOOLS
    is set (CI installs the tools), where a missing one is a failure."""
    import shutil

    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed ({install})"
        if os.environ.get("HANET_REQUIRE_TOOLS"):
            pytest.fail(f"HANET_REQUIRE_TOOLS is set but {reason}")
        pytest.skip(reason)
    return path
