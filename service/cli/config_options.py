"""``hanet train``'s options that come from the configs, so that the command line cannot drift
from them: one per ``model.train.TrainCfg`` field (its help and smallest value are the field's
metadata) and one per architecture field a run may override.

They are made when the command is used (its help or a run), not when the command line starts:
the configs' module imports torch, which no other command should wait for."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from typer.core import TyperCommand, TyperOption

if TYPE_CHECKING:
    from model.config import HANetCfg
    from model.train import TrainCfg

CONFIG_OPTIONS = "hanet.config_options"  # key of their values in the context's ``meta``
# TrainCfg fields given in another unit on the command line: field -> (option, field units per
# option unit)
OTHER_UNITS: dict[str, tuple[str, float]] = {"time_budget_s": ("time_budget_min", 60.0)}
# HANetCfg fields a run may override (unset: the named architecture's value), with their help
ARCH_OVERRIDES: dict[str, dict[str, Any]] = {
    "text_graph": {
        "help": "Sentence-graph edges: reference (the reference code's: root -> verb, verb <-> "
        "argument, no self-loops) or extended (self-loops, root <-> verb, verbless arguments "
        "tied to the root); default: the architecture's (reference)."
    },
    "motion_levels": {
        "help": "Temporal convolution on the action level, or on all three levels' input; "
        "default: the architecture's (action)."
    },
    "keypoints": {
        "min": 0,
        "help": "Soft-argmax keypoints per frame whose positions the temporal convolution "
        "reads (0: none); default: the architecture's (0).",
    },
    "motion_stream": {
        "min": 0,
        "help": "Features of a small convolutional network over each frame and its difference "
        "to the next that the temporal convolution reads (0: none); default: the "
        "architecture's (0).",
    },
}


def config_options() -> list[TyperOption]:
    """The architecture overrides, then one option per TrainCfg field, as typer makes them
    (from a signature built of the configs' fields)."""
    from model.config import HANetCfg
    from model.train import TrainCfg

    arch_types = get_type_hints(HANetCfg)
    params = [
        _parameter(name, arch_types[name] | None, None, **extra)
        for name, extra in ARCH_OVERRIDES.items()
    ]
    train_types = get_type_hints(TrainCfg)
    for f in fields(TrainCfg):
        name = OTHER_UNITS[f.name][0] if f.name in OTHER_UNITS else f.name
        params.append(_parameter(name, train_types[f.name], f.default, **f.metadata))

    def options(**values: Any) -> None:
        """Only its signature is used."""

    options.__signature__ = inspect.Signature(params)  # typer reads it
    holder = typer.Typer(add_completion=False)
    holder.command()(options)
    return typer.main.get_command(holder).params


def _parameter(
    name: str, kind: Any, default: Any, help: str, min: float | None = None
) -> inspect.Parameter:
    option = typer.Option(help=help, min=min)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def train_settings(
    arch: str, values: dict[str, Any], pretrained: str | None = None
) -> tuple[TrainCfg, HANetCfg]:
    """The training settings and the architecture (``arch`` with the overrides given) that the
    config options' ``values`` (by option name) say; with ``pretrained``, ``arch`` is an
    open_clip architecture (``model.pretrained``). ValueError for values they refuse."""
    from model import get_config
    from model.config import HANetCfg
    from model.train import TrainCfg

    train = {}
    for f in fields(TrainCfg):
        if f.name in OTHER_UNITS:
            option, factor = OTHER_UNITS[f.name]
            train[f.name] = None if values[option] is None else values[option] * factor
        else:
            train[f.name] = values[f.name]
    if pretrained is None:
        cfg = get_config(arch)
    else:
        from model.pretrained import hanet_config

        cfg = hanet_config(arch, pretrained)
    changes = {k: values[k] for k in ARCH_OVERRIDES if values[k] is not None}
    if changes:
        cfg = HANetCfg.from_dict({**cfg.to_dict(), **changes})
    return TrainCfg(**train), cfg


class ConfigOptionsCommand(TyperCommand):
    """A typer command that also takes the config options, added on first use; their values
    reach the command function in ``ctx.meta[CONFIG_OPTIONS]``, by option name."""

    _config_names: frozenset[str] = frozenset()

    def get_params(self, ctx: typer.Context) -> list[Any]:
        if not self._config_names:
            options = config_options()
            self._config_names = frozenset(o.name for o in options if o.name)
            self.params.extend(options)
        return super().get_params(ctx)

    def invoke(self, ctx: typer.Context) -> Any:
        ctx.meta[CONFIG_OPTIONS] = {
            name: ctx.params.pop(name) for name in self._config_names if name in ctx.params
        }
        return super().invoke(ctx)
