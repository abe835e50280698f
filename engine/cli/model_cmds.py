"""`sessrec models`: every model and baseline with its hyperparameters, defaults and CPU preset."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.output import Output
from engine.core.text import table
from engine.core.workspace import Workspace
from engine.models.registry import SPECS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models and their hyperparameters")
    p.set_defaults(func=cmd_models)


# ---- models --------------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    def value(v: Any) -> Any:
        return getattr(v, "value", v)
    # two columns (name and kind | description, defaults, CPU preset): readable at 80 columns
    rows, objs = [], {}
    for s in SPECS.values():
        params = s.config.params()
        defaults = {p.name: value(p.default) for p in params}
        cpu = {p.name: value(p.cpu) for p in params if p.cpu is not None}
        rows.append([f"{s.name}\n({s.kind})",
                     f"{s.description}\ndefaults: " + (", ".join(f"{k}={v}" for k, v in defaults.items()) or "-")
                     + ("\non CPU: " + ", ".join(f"{k}={v}" for k, v in cpu.items()) if cpu else "")])
        objs[s.name] = {"kind": s.kind.value, "description": s.description, "defaults": defaults,
                        "cpu_overrides": cpu, "stages": [str(x) for x in s.stages()],
                        "params": {p.name: {"type": p.kind, "help": p.help, "bounds": p.bounds() or None}
                                   for p in params}}
    out.result({"models": objs},
               table("models (`sessrec train --model NAME --hidden 64 ...` or --param KEY=VALUE)",
                     ["model", "description"], rows))
    return 0
