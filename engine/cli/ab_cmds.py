"""`sessrec ab report | simulate`: read an A/B experiment's logs (per-arm rates with intervals, the
sequential test, the sample-ratio check), and replay held-out sessions against a server as users."""

from __future__ import annotations

import argparse
import json
import os

from engine.cli.flags import add_config_flags, bounded_int, config_names, given
from engine.cli.output import Output
from engine.core.config import ABTestConfig, SimulateConfig
from engine.core.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ab", help="A/B experiments: report, simulate (serve them with `sessrec serve --arm`)")
    ab = p.add_subparsers(dest="ab_cmd", required=True, metavar="COMMAND")

    r = ab.add_parser("report", help="per arm: impressions, CTR@k, conversions with intervals; the "
                      "sequential test against the first arm; the sample-ratio check")
    r.add_argument("experiment", nargs="?", help="its name (default: the most recently changed)")
    r.add_argument("--phase", type=bounded_int("phase", 1, 1_000_000), default=None,
                   help="the phase to read (default: the latest; a reweight or a swapped arm starts one)")
    r.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add_config_flags(r.add_argument_group("the test"), ABTestConfig)
    r.set_defaults(func=cmd_report)

    s = ab.add_parser("simulate", help="replay a dataset's test sessions as users of a server (loopback "
                      "only): request top-k after each event, click the true next item when listed "
                      "(position bias), send feedback")
    s.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    s.add_argument("--dataset", required=True, help="whose test sessions to replay")
    s.add_argument("--report", action="store_true", help="print the experiment's report afterwards")
    add_config_flags(s.add_argument_group("simulation"), SimulateConfig)
    s.set_defaults(func=cmd_simulate)


def cmd_report(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.ab.report import experiment_report, render
    rep = experiment_report(ws, args.experiment, args.phase, ABTestConfig(**given(args, config_names(ABTestConfig))))
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    out.result({"report": rep}, render(rep))
    return 0


def cmd_simulate(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.ab.simulate import simulate
    from engine.serve.security import KEY_ENV
    cfg = SimulateConfig(**given(args, config_names(SimulateConfig)))
    res = simulate(ws, args.url, args.dataset, cfg, api_key=os.environ.get(KEY_ENV) or None, log=out.log)
    out.result({"simulation": res.to_dict()}, None)
    if args.report:
        from engine.ab.report import experiment_report, render
        import httpx
        exp = (httpx.get(args.url.rstrip("/") + "/health", timeout=10).json().get("experiment") or {}).get("name")
        if exp:
            out.print(render(experiment_report(ws, exp)))
    return 0
