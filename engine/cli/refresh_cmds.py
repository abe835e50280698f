"""`sessrec refresh DATASET --serving URL`: append new data, rebuild, train warm-started from the run
in service, compare both on validation, promote the new run only if the guard says so (engine.refresh)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.cli.flags import add_config_flags, config_names, given
from engine.cli.output import Output
from engine.core.config import RefreshConfig
from engine.core.schema import DataFormat, Device, values
from engine.core.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refresh", help="new data -> rebuild -> warm-started training -> validation against the run in "
        "service -> promote only if better (a guard with a margin) -> hot reload; every step resumable",
        description="Each step is recorded in WORKSPACE/refresh/DATASET/events.jsonl; run the same command "
        "again after an interruption and it continues where it stopped. The server's admin key comes from "
        "SESSREC_ADMIN_KEY (or SESSREC_API_KEY).")
    p.add_argument("dataset")
    p.add_argument("--serving", required=True, metavar="URL", help="the server whose run is refreshed")
    p.add_argument("--append", action="append", default=[], type=Path, metavar="PATH",
                   help="a newer chunk of the log to append first (repeatable; none: the dataset as it is)")
    p.add_argument("--format", choices=[f for f in values(DataFormat) if f != DataFormat.SRGNN], default=None,
                   help="the chunks' format (default: the dataset's)")
    p.add_argument("--arm", default=None, help="an A/B server: the arm whose run is refreshed")
    p.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    add_config_flags(p.add_argument_group("the new run and the guard"), RefreshConfig)
    p.set_defaults(func=cmd_refresh)


def cmd_refresh(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.refresh.loop import refresh
    from engine.serve.security import ADMIN_KEY_ENV, KEY_ENV
    cfg = RefreshConfig(**given(args, config_names(RefreshConfig)))
    key = os.environ.get(ADMIN_KEY_ENV) or os.environ.get(KEY_ENV) or None
    with out:
        final = refresh(ws, args.dataset, args.serving, args.append, cfg, arm=args.arm, key=key, device=args.device,
                        chunk_format=args.format, log=out.log, progress=out.progress)
    v = final["values"]
    out.result({"refresh": final},
               f"{final['cycle']}: {v['metric']} {v['new']:.4f} (new {final['new_run']}) vs {v['serving']:.4f} "
               f"({final['previous']}): " + (f"promoted, {args.serving} serves {final['serving']}" if final["promoted"]
                                             else f"kept {final['serving']}"))
    return 0
