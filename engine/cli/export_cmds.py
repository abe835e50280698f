"""`sessrec export RUN --onnx OUT.onnx`: a trained session GNN as an ONNX file (engine.export)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.output import Output, table
from engine.errors import InputError
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained GNN run as ONNX (checked against PyTorch)")
    p.add_argument("run", help="run id (a graphsage, gat, graph_transformer or graph_transformer_ffn run)")
    p.add_argument("--onnx", type=Path, default=None, metavar="OUT.onnx",
                   help="output file (default: the run's own export/model.onnx)")
    p.add_argument("--parity-limit", type=int, default=2000, metavar="N",
                   help="test prefixes scored by both ONNX Runtime and PyTorch before writing (default 2000)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.export.onnx import export_onnx
    if args.parity_limit < 1:
        raise InputError("--parity-limit must be >= 1 (every export is checked)")
    run = ws.existing_run(args.run)
    with out:
        report = export_onnx(run, args.onnx or run.onnx, parity_limit=args.parity_limit,
                             progress=out.progress)
    p = report.parity
    rows = [["file", str(report.path)], ["size (MB)", round(report.size_mb, 3)],
            ["seconds (export + parity)", round(report.seconds, 2)],
            ["parity sessions", p.rows], ["identical top-10 (set)", round(p.top10_set_share, 4)],
            ["identical top-10 (order)", round(p.top10_order_share, 4)],
            ["max relative error", f"{p.max_rel_error:.2e}"]]
    meta = report.metadata
    out.result({"export": report.to_dict()},
               table(f"ONNX export of run {meta['run_id']} ({meta['model']} on {meta['dataset']}, "
                     f"{meta['checkpoint']})", ["", "value"], rows))
    return 0
