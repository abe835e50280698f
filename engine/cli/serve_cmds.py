"""`sessrec serve`: the HTTP recommendation service for a run or a baseline (see engine.serve)."""

from __future__ import annotations

import argparse
import os

from engine.cli.flags import bounded_float, bounded_int
from engine.cli.output import Output
from engine.core.errors import InputError
from engine.core.schema import Runtime, Search, values
from engine.core.workspace import Workspace, check_name
from engine.serve.limits import ConnectionLimits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a run's recommendations over HTTP (FastAPI)",
        description="Endpoints: GET /health, POST /recommend, POST /recommend/batch, GET /metrics "
        "(Prometheus), POST /admin/reload, GET /docs (OpenAPI). Listens on loopback by default; any other "
        "address needs an API key (--api-key or SESSREC_API_KEY; clients send it as X-API-Key) or "
        "--insecure. SIGHUP (or POST /admin/reload) loads the run's newest best checkpoint without "
        "dropping requests. /admin/* always needs a key: the API key, or an admin-only key in the "
        "SESSREC_ADMIN_KEY environment variable (what the app gives the servers it starts). "
        "An A/B test: --arm A=RUN1 --arm B=RUN2 [--split 50,50] instead of RUN (requests then carry a "
        "session_id, whose hash picks the arm; POST /feedback records clicks and purchases; "
        "`sessrec ab report` reads the experiment).")
    p.add_argument("target", nargs="?", metavar="RUN|baseline:NAME@DATASET",
                   help="a run id (sessrec runs) or a baseline (not with --arm)")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=RUN",
                   help="an arm of an A/B test (repeat: at least two; the same run twice is an A/A test)")
    p.add_argument("--split", default=None, metavar="W1,W2,...",
                   help="the arms' traffic weights, in order (default: equal)")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="the experiment's name: its folder in the workspace and the salt of the assignment "
                        "(default: ab- and a hash of the arms, so the same command continues it)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=bounded_int("port", 0, 65535), default=8000,
                   help="port (default 8000; 0 picks a free one)")
    p.add_argument("--workers", type=bounded_int("workers", 1, 256), default=1,
                   help="worker processes (default 1)")
    p.add_argument("--runtime", choices=values(Runtime), default="torch",
                   help="torch (eager PyTorch), compiled (the GNN encoder compiled ahead of time by AOTInductor: "
                        "fastest, needs a C++ compiler, ~1 min to build once per checkpoint) or onnx (ONNX "
                        "Runtime, from the run's ONNX export)")
    p.add_argument("--search", choices=values(Search), default="auto",
                   help="top-k over the catalogue: exact, pq (candidates from a product-quantised scan of "
                        "every item, scored exactly; calibrated to agree with exact on 99%% of held-out "
                        "sessions), auto (pq from 20,000 items, GNN runs only)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="device (default cpu)")
    p.add_argument("--threads", type=bounded_int("threads", 1, 4096), default=1,
                   help="intra-op CPU threads per worker (default 1: concurrent requests are batched; "
                        "more threads spin on cores the clients need)")
    limits = ConnectionLimits()
    p.add_argument("--header-timeout", type=bounded_float("header_timeout", 0, 3600, lo_open=True),
                   default=limits.header_timeout_s, metavar="S",
                   help=f"close a connection whose request headers take longer (default "
                        f"{limits.header_timeout_s:g}; also after each response, for the next request)")
    p.add_argument("--body-timeout", type=bounded_float("body_timeout", 0, 3600, lo_open=True),
                   default=limits.body_timeout_s, metavar="S",
                   help=f"answer 408 and close when a request body takes longer (default {limits.body_timeout_s:g})")
    p.add_argument("--max-connections", type=bounded_int("max_connections", 1, 1_000_000),
                   default=limits.max_connections, metavar="N",
                   help=f"open connections per worker; more are answered 503 (default {limits.max_connections})")
    p.add_argument("--api-key", default=None, help="API key (better: the SESSREC_API_KEY environment "
                   "variable, which other users cannot read from the process list)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a key")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.serve.security import ADMIN_KEY_ENV, KEY_ENV
    from engine.serve.server import ServeOptions, serve
    key = args.api_key or os.environ.get(KEY_ENV) or None
    if bool(args.target) == bool(args.arm):
        raise InputError("serve: give either RUN (one model) or --arm NAME=RUN at least twice (an A/B test)")
    if args.split and not args.arm:
        raise InputError("--split: needs --arm (the weights of the arms)")
    if args.experiment:
        check_name(args.experiment, "--experiment")
    opts = ServeOptions(target=args.target or "", host=args.host, port=args.port, workers=args.workers,
                        runtime=args.runtime, search=args.search, device=args.device, api_key=key,
                        admin_key=os.environ.get(ADMIN_KEY_ENV) or None,
                        insecure=args.insecure, threads=args.threads,
                        limits=ConnectionLimits(args.header_timeout, args.body_timeout, args.max_connections),
                        arms=tuple(args.arm), split=args.split, experiment=args.experiment)
    out.log(f"loading {args.target or ', '.join(args.arm)} ...")

    def ready(event: dict) -> None:
        out.emit(event)
        exp = event.get("experiment")
        what = (f"experiment {exp['name']} (phase {exp['phase']}: "
                + ", ".join(f"{a['name']}={a['target']} {a['share']:.0%}" for a in exp['arms']) + ")"
                if exp else f"{event['model']} ({event['runtime']}, {event['search']} search)")
        out.log(f"serving {what} at {event['url']}  (docs: {event['url']}/docs; Ctrl-C stops)")
    return serve(ws, opts, ready)
