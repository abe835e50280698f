"""Typed values as the engine's command line: the inverse of the flag generator (`engine.cli.flags`).

A config field `batch_size` is the flag `--batch-size`; a boolean is `--name` or `--no-name`
(argparse's BooleanOptionalAction); an enum is its value; a float keeps every digit (`repr`), so a
tuned learning rate written as a flag parses back to the same number. Everything that writes an
engine command line (the job runner, the `--nproc` launcher, the tuner's "train this again"
command) writes it here, so the spelling is one rule.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping


def flag_name(name: str) -> str:
    """`batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def flag_value(value: Any) -> str:
    """A typed value as the text its flag takes."""
    value = getattr(value, "value", value)            # an enum member: its value
    return repr(value) if isinstance(value, float) else str(value)


def to_argv(values: Mapping[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """Fields by name as flags, in order; None (and "") mean "not given" and are left out, as the
    parser leaves them None. `skip`: names not to write."""
    left_out = set(skip)
    args: list[str] = []
    for name, value in values.items():
        if name in left_out or value is None or value == "":
            continue
        flag = flag_name(name)
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, flag_value(value)]
    return args
