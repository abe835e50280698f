"""`sessrec export RUN [--onnx OUT.onnx | --compiled [OUT.pt2]]`: a trained session GNN as an ONNX file,
or its encoder compiled by AOTInductor (engine.export)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.output import Output
from engine.core.errors import InputError
from engine.core.text import table
from engine.core.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained GNN run as ONNX, or compile its encoder (checked "
                                      "against PyTorch)")
    p.add_argument("run", help="run id (a graphsage, gat, graph_transformer or graph_transformer_ffn run)")
    p.add_argument("--onnx", type=Path, default=None, metavar="OUT.onnx",
                   help="output file (default: the run's own export/model.onnx)")
    p.add_argument("--compiled", type=Path, nargs="?", const=True, default=None, metavar="OUT.pt2",
                   help="instead of ONNX: compile the encoder with AOTInductor (needs a C++ compiler; "
                        "default file: the run's own export/encoder-<device>.pt2, what --runtime compiled serves)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to compile for (default cpu)")
    p.add_argument("--parity-limit", type=int, default=2000, metavar="N",
                   help="test prefixes scored by both the export and PyTorch before writing (default 2000)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if args.parity_limit < 1:
        raise InputError("--parity-limit must be >= 1 (every export is checked)")
    if args.compiled is not None and args.onnx is not None:
        raise InputError("--onnx and --compiled: choose one export per command")
    run = ws.existing_run(args.run)
    with out:
        if args.compiled is not None:
            from engine.export.compiled import compile_encoder
            path = run.compiled(args.device) if args.compiled is True else args.compiled
            report = compile_encoder(run, path, device=args.device, parity_limit=args.parity_limit,
                                     progress=out.progress)
            kind, seconds = f"Compiled encoder ({args.device})", report.compile_seconds
        else:
            from engine.export.onnx import export_onnx
            report = export_onnx(run, args.onnx or run.onnx, parity_limit=args.parity_limit,
                                 progress=out.progress)
            kind, seconds = "ONNX export", report.export_seconds
    p = report.parity
    rows = [["file", str(report.path)], ["size (MB)", round(report.size_bytes / 1e6, 3)],
            ["seconds (build + parity)", round(report.seconds, 2)], ["seconds (build)", round(seconds, 2)],
            ["parity sessions", p.rows], ["identical top-10 (set)", round(p.top10_set_share, 4)],
            ["identical top-10 (order)", round(p.top10_order_share, 4)],
            ["max relative error", f"{p.max_rel_error:.2e}"]]
    meta = report.metadata
    out.result({"export": report.to_dict()},
               table(f"{kind} of run {meta['run_id']} ({meta['model']} on {meta['dataset']}, "
                     f"{meta['checkpoint']})", ["", "value"], rows))
    return 0
