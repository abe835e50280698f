"""`sessrec bench pipeline | train | quality`: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.output import Output
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (table + JSON)")
    bsub = p.add_subparsers(dest="bench_cmd", required=True, metavar="BENCHMARK")
    b = bsub.add_parser("pipeline", help="every stage on the full demo: time and peak memory")
    b.add_argument("--size", default="full", help="demo size (default full = RetailRocket scale)")
    b.add_argument("--out", type=Path, help="JSON path (default bench/results/pipeline-<size>-<time>.json)")
    b.add_argument("--oracle", action="store_true", help="also time the demo oracle stage")
    b.set_defaults(func=cmd_bench_pipeline)


def cmd_bench_pipeline(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import pipeline as bp
    res = bp.run(ws, size=args.size, log=out.log, out=args.out, include_oracle=args.oracle)
    out.result(res, bp.render(res))
    return 0
