"""Command-line flags generated from the config dataclasses (`engine/core/config.py`): `--batch-size` is
`TrainConfig.batch_size`, `--cooc-window` is `DataConfig.cooc_window`, `--hidden` is the model
configs' `hidden`. Types, choices, bounds and help come from the field; a flag not given is None,
so the config's own default (or the dataset's current value) holds.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

from engine.core.config import Config, ParamSpec
from engine.core.errors import InputError


def _value_type(spec: ParamSpec):
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = spec.name          # argparse names the type in its messages
    return parse


def bounded_int(name: str, lo: int, hi: int):
    """argparse type for a whole-number flag that is no config field (`--port`, `--k`): parsed and
    bounded by the configs' own rule, so its errors read like theirs."""
    return _value_type(ParamSpec(name, int, None, "", min=lo, max=hi))


def bounded_float(name: str, lo: float, hi: float, lo_open: bool = False):
    """`bounded_int` for a number (`--header-timeout`)."""
    return _value_type(ParamSpec(name, float, None, "", min=lo, max=hi, min_open=lo_open))


def field_type(cls: type[Config], name: str):
    """argparse type of a hand-written flag that takes a config field (`eval --eval-batch-size`)."""
    return _value_type(cls.param(name))


def _help(spec: ParamSpec, show_default: bool) -> str:
    text = spec.help
    if show_default:
        default = spec.default.value if hasattr(spec.default, "value") else spec.default
        text += f" (default {default}" + (f"; {spec.cpu} on CPU" if spec.cpu is not None else "") + ")"
    return text.replace("%", "%%")


def add_flag(group: Any, spec: ParamSpec, show_default: bool = True, extra_help: str = "") -> None:
    help_text = _help(spec, show_default) + extra_help
    if spec.type is bool:
        group.add_argument(spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
    else:
        group.add_argument(spec.flag, dest=spec.name, type=_value_type(spec), default=None,
                           metavar=spec.name.upper() if not spec.choices else "{" + ",".join(spec.choices) + "}",
                           help=help_text)


def add_config_flags(group: Any, cls: type[Config], exclude: Iterable[str] = (),
                     show_default: bool = True) -> None:
    """One flag per command-line field of `cls`."""
    skip = set(exclude)
    for spec in cls.params():
        if spec.cli and spec.name not in skip:
            add_flag(group, spec, show_default)


def add_union_flags(group: Any, classes: dict[str, type[Config]]) -> list[str]:
    """Flags for the fields of several configs (the models'): each name once, with the models that
    have it in its help. Returns the field names."""
    seen: dict[str, tuple[ParamSpec, list[str]]] = {}
    for owner, cls in classes.items():
        for spec in cls.params():
            if spec.cli:
                seen.setdefault(spec.name, (spec, []))[1].append(owner)
    for name, (spec, owners) in seen.items():
        add_flag(group, spec, show_default=True, extra_help=f" [{', '.join(owners)}]"
                 if len(owners) < len(classes) else "")
    return list(seen)


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The flags among `names` that were given (not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def config_names(cls: type[Config], exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude)
    return [p.name for p in cls.params() if p.cli and p.name not in skip]
