"""The ``hanet`` command line. Logging is configured here, in the entry point, and nowhere else.
Heavy imports (torch, open_clip) happen inside the commands that need them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from service.settings import HanetSettings

app = typer.Typer(help="HANet text-to-video search.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

log = logging.getLogger("hanet")


def _settings() -> HanetSettings:
    try:
        return HanetSettings()
    except Exception as exc:  # pydantic's ValidationError: say what is wrong and stop
        raise typer.BadParameter(f"invalid HANET_* settings: {exc}") from exc


@app.callback()
def main() -> None:
    logging.basicConfig(
        level=_settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the database schema (SQLite in the data dir, or HANET_DATABASE_URL)."""
    import migrations
    from indexer.store import make_engine

    url = _settings().resolved_database_url
    make_engine(url).dispose()  # creates the SQLite folder when needed
    migrations.upgrade(url, revision)
    typer.echo(f"database at revision {revision}: {url}")


@app.command("init")
def init(
    out: Annotated[Path, typer.Option(help="Where to write the HANet checkpoint.")],
    arch: Annotated[str, typer.Option(help="HANet architecture name.")] = "ViT-B-32",
    clip_weights: Annotated[
        Path | None, typer.Option(help="open_clip weights file (.pt, .bin or .safetensors).")
    ] = None,
) -> None:
    """Make a HANet checkpoint, from published open_clip weights when given (zero-shot start:
    scores like CLIP with mean-pooled frames until trained)."""
    from model import CheckpointError, ConfigError, create_model

    try:
        model = create_model(arch, clip_weights=str(clip_weights) if clip_weights else None)
    except (CheckpointError, ConfigError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    digest = model.save(str(out))
    typer.echo(f"wrote {out} ({arch}, sha256 {digest[:16]})")


@app.command("demo")
def demo() -> None:
    """Run the most complete real thing the project does so far (see README)."""
    from service.demo import run_demo

    run_demo()
