"""The model package's domain errors."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of the model package's errors."""


class CheckpointError(ModelError):
    """A checkpoint or weights file that is missing, corrupt, truncated or does not match."""
