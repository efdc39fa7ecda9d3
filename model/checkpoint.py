"""One-file checkpoints: config, weights, concept vocabulary and preprocessing, strictly loaded."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from model.errors import CheckpointError

FORMAT = "hanet-checkpoint"
VERSION = 1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    model: torch.nn.Module, path: str | Path, dtype: torch.dtype | None = None
) -> str:
    """Write ``model`` (a HANet: its ``cfg``, ``vocab`` and weights) to ``path`` via a temporary
    file and an atomic rename; returns the file's sha256, which index builds record to tie
    themselves to this exact model.
    ``dtype`` (e.g. float16) stores floating-point weights smaller, for distribution; loading
    gives float32 weights again."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "vocab": model.vocab.to_dict() if model.vocab is not None else None,
        "state_dict": state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    model.checkpoint_sha256 = file_sha256(path)
    return model.checkpoint_sha256


def read_checkpoint(path: Path) -> dict:
    """A checkpoint file's payload (config, vocabulary, weights), checked for its format."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a HANet checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}, "
            f"this code reads version {VERSION}"
        )
    return payload
