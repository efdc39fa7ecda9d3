"""The ``hanet`` command line: the entry point. It reads the settings once and configures logging
(here and nowhere else), then runs one command. Operations (``ops``) run the service; research
(``research``) makes corpora and models. Heavy imports (torch, open_clip) happen inside the
commands that need them."""

from __future__ import annotations

import logging

import typer

from service.cli import ops, research
from service.cli.common import load_settings
from service.cli.config_options import ConfigOptionsCommand

OPERATIONS, RESEARCH = "Operations", "Research"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

app = typer.Typer(help="HANet text-to-video search.", no_args_is_help=True)


@app.callback()
def main(ctx: typer.Context) -> None:
    """Before any command: the settings, read once (one warning per unknown name), and logging."""
    root = logging.getLogger()
    ours = not root.handlers  # under a test runner its handlers and level stay
    logging.basicConfig(format=LOG_FORMAT)  # before the settings, so their warnings are formatted
    settings = load_settings()
    if ours:
        root.setLevel(settings.log_level)
    ctx.obj = settings  # what the commands get (``common.settings_of``)
    for noisy in ("faiss.loader", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


app.add_typer(ops.db_app, name="db", rich_help_panel=OPERATIONS)
app.add_typer(ops.index_app, name="index", rich_help_panel=OPERATIONS)
app.command("serve", rich_help_panel=OPERATIONS)(ops.serve)
app.command("demo", rich_help_panel=OPERATIONS)(ops.demo)
app.command("synth", rich_help_panel=RESEARCH)(research.synth)
app.command("train", rich_help_panel=RESEARCH, cls=ConfigOptionsCommand)(research.train)
app.command("eval", rich_help_panel=RESEARCH)(research.evaluate)
app.command("eval-moments", rich_help_panel=RESEARCH)(research.eval_moments)
app.command("init", rich_help_panel=RESEARCH)(research.init)

__all__ = ["app"]
