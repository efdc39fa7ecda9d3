"""What the commands share: the settings, database and model from the composition root
(``service.runtime``), its errors turned into clear command-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError

from service import runtime
from service.settings import HanetSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from model import HANet


def load_settings() -> HanetSettings:
    """The settings from the environment (an unknown ``HANET_*`` name is warned about)."""
    try:
        return runtime.load_settings()
    except ValidationError as exc:  # say what is wrong and stop
        raise typer.BadParameter(f"invalid HANET_* settings: {exc}") from exc


def settings_of(ctx: typer.Context) -> HanetSettings:
    """The settings the entry point read for this command."""
    if not isinstance(ctx.obj, HanetSettings):  # a command invoked without the entry point
        ctx.obj = load_settings()
    return ctx.obj


def settings_with_checkpoint(ctx: typer.Context) -> HanetSettings:
    """The settings, refused when their checkpoint file is missing."""
    settings = settings_of(ctx)
    if not settings.checkpoint.is_file():
        raise typer.BadParameter(f"HANET_CHECKPOINT {settings.checkpoint} does not exist")
    return settings


@contextmanager
def database(settings: HanetSettings, *, migrate: bool | None = None) -> Iterator[Engine]:
    """The configured database (``runtime.open_database``), disposed of afterwards."""
    try:
        engine = runtime.open_database(settings, migrate=migrate)
    except runtime.SchemaError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        yield engine
    finally:
        engine.dispose()


def indexing_model(settings: HanetSettings) -> HANet:
    """The configured checkpoint on the indexing device."""
    from model import CheckpointError

    try:
        return runtime.load_model(settings, device=runtime.indexing_device(settings))
    except CheckpointError as exc:
        raise typer.BadParameter(f"HANET_CHECKPOINT: {exc}") from exc
