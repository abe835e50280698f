"""`sessrec bench pipeline | import | train | quality | ...`: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.output import Output
from engine.core.schema import Device, Loss, Protocol, Search, values
from engine.core.workspace import Workspace
from engine.models.registry import GNNS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (table + JSON)")
    bsub = p.add_subparsers(dest="bench_cmd", required=True, metavar="BENCHMARK")
    b = bsub.add_parser("pipeline", help="every stage on the full demo: time and peak memory")
    b.add_argument("--size", default="full", help="demo size (default full = RetailRocket scale)")
    b.add_argument("--sizes", help="several demo sizes side by side, e.g. small,full,xl (growth per event)")
    b.add_argument("--out", type=Path, help="JSON path (default bench/results/pipeline-<size>-<time>.json)")
    b.add_argument("--oracle", action="store_true", help="also time the demo oracle stage")
    b.set_defaults(func=cmd_bench_pipeline)
    b = bsub.add_parser("import", help="a shop's Parquet log (user column, ISO times) from the xl demo, "
                        "imported with --format events: time and peak memory per stage")
    b.add_argument("--size", default="xl", help="demo size to rewrite as the log (default xl: 30M events)")
    b.add_argument("--out", type=Path, help="JSON path (default bench/results/import-<size>-<time>.json)")
    b.set_defaults(func=cmd_bench_import)
    _register_train(bsub)
    _register_quality(bsub)
    _register_ablation(bsub)
    _register_recommend(bsub)
    _register_serve(bsub)
    _register_search(bsub)
    _register_ab(bsub)


def cmd_bench_pipeline(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import pipeline as bp
    from engine.core.errors import InputError
    from engine.data.demo import DEMO_SIZES
    sizes = [s.strip() for s in (args.sizes or args.size).split(",") if s.strip()]
    bad = [s for s in sizes if s not in DEMO_SIZES]
    if bad or not sizes:
        raise InputError(f"bench pipeline: unknown demo size(s) {', '.join(bad) or '(none)'}; "
                         f"valid sizes: {', '.join(DEMO_SIZES)}")
    if args.sizes:
        res = bp.run_sizes(ws, sizes, log=out.log, out=args.out, include_oracle=args.oracle)
        out.result(res, bp.render_sizes(res))
        return 0
    res = bp.run(ws, size=sizes[0], log=out.log, out=args.out, include_oracle=args.oracle)
    out.result(res, bp.render(res))
    return 0


def cmd_bench_import(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import log_import
    from engine.core.errors import InputError
    from engine.data.demo import DEMO_SIZES
    if args.size not in DEMO_SIZES:
        raise InputError(f"bench import: unknown demo size {args.size!r}; valid sizes: {', '.join(DEMO_SIZES)}")
    res = log_import.run(ws, size=args.size, log=out.log, out=args.out)
    out.result(res, log_import.render(res))
    return 0


def _register_train(bsub) -> None:
    b = bsub.add_parser("train", help="training and evaluation throughput per model")
    b.add_argument("--dataset", default="bench-demo-full", help="built dataset (default: the full demo "
                   "built by `sessrec bench pipeline`)")
    b.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    b.add_argument("--models", default=",".join(GNNS))
    b.add_argument("--batch-size", type=int, default=1024)
    b.add_argument("--steps", type=int, default=20, help="timed steps per model (epoch time is projected)")
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--loss", default=Loss.CE.value, choices=values(Loss))
    b.add_argument("--full-epoch", action="store_true", help="time one whole epoch instead of projecting")
    b.add_argument("--no-bf16", dest="bf16", action="store_false")
    b.add_argument("--compile", action="store_true")
    b.add_argument("--no-reference", dest="reference", action="store_false")
    b.add_argument("--num-threads", type=int, default=0, help="CPU threads for torch (0: default)")
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_train)


def cmd_bench_train(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import train as bt
    from engine.core.errors import InputError
    from engine.core.threads import set_compute_threads
    if args.batch_size < 1 or args.steps < 1:
        raise InputError("--batch-size and --steps must be >= 1")
    if args.num_threads:
        set_compute_threads(args.num_threads)
    models = tuple(m for m in args.models.split(",") if m)
    res = bt.run(ws, args.dataset, args.device, models, args.batch_size, args.steps, args.hidden,
                 args.full_epoch, args.bf16, args.compile, args.reference, args.loss, log=out.log, out=args.out)
    out.result(res, bt.render(res))
    return 0


def _register_quality(bsub) -> None:
    from engine.bench.quality_datasets import DATASETS
    from engine.models.registry import BASELINES, GNNS
    b = bsub.add_parser("quality", help="every model and baseline per dataset and protocol: metrics with "
                        "bootstrap intervals, seeds, a paired test, published numbers")
    b.add_argument("--datasets", default="yoochoose-100k,diginetica-sample,demo-small",
                   help=f"comma list of {', '.join(DATASETS)}")
    b.add_argument("--models", default=",".join(BASELINES + GNNS))
    b.add_argument("--seeds", default="0,1,2", help="comma list of seeds for each GNN (baselines are "
                   "deterministic: one run, with the first seed)")
    b.add_argument("--protocols", default=",".join(Protocol), help="comma list of last, prefixes")
    b.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data",
                   help="folder with the real data (default ../shared/data)")
    b.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    b.add_argument("--epochs", type=int, default=30)
    b.add_argument("--patience", type=int, default=3)
    b.add_argument("--batch-size", type=int, default=512)
    b.add_argument("--param", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
                   help="KEY=VALUE: for every GNN (e.g. hidden=128); MODEL.KEY=VALUE: for that model only "
                        "(e.g. sknn.k=200), winning over the former")
    b.add_argument("--no-hybrid", dest="hybrid", action="store_false",
                   help="skip the hybrid row (the best GNN mixed with the best baseline, reported apart)")
    b.add_argument("--params-file", type=Path, metavar="JSON",
                   help="tuned hyperparameters as {model: {parameter: value}} (--param wins)")
    b.add_argument("--bootstrap", type=int, help="bootstrap resamples of the test sessions (default: "
                   "engine.evaluation.stats.N_BOOT, 1000)")
    b.add_argument("--refit", action="store_true", help="the papers' protocol: epochs chosen on validation, "
                   "then every model trained again on train + validation and tested once")
    b.add_argument("--loss", default=Loss.AUTO.value, choices=values(Loss), help="training loss of the GNNs")
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_quality)


def _int_list(text: str, flag: str) -> list[int]:
    from engine.core.errors import InputError
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected a comma list of integers") from None


def cmd_bench_quality(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import quality as bq
    from engine.core.errors import InputError
    from engine.evaluation.stats import N_BOOT
    n_boot = N_BOOT if args.bootstrap is None else args.bootstrap
    if n_boot < 1:
        raise InputError("--bootstrap must be >= 1")
    protocols = [p for p in args.protocols.split(",") if p]
    bad = [p for p in protocols if p not in list(Protocol)]
    if bad or not protocols:
        raise InputError(f"--protocols {args.protocols!r}: expected a comma list of {', '.join(Protocol)}")
    res = bq.run(ws, [d for d in args.datasets.split(",") if d], [m for m in args.models.split(",") if m],
                 args.shared, args.device, args.epochs, args.patience, args.batch_size,
                 bq.parse_params(args.param, args.params_file), seeds=_int_list(args.seeds, "--seeds"),
                 protocols=protocols, n_boot=n_boot, log=out.log, out=args.out, hybrid=args.hybrid,
                 refit=args.refit, loss=args.loss)
    out.result(res, bq.render(res))
    return 0


def _register_ablation(bsub) -> None:
    b = bsub.add_parser("ablation", help="Graph Transformer variants: FFN, PE, layers, losses, readouts")
    b.add_argument("--dataset", default="demo")
    b.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    b.add_argument("--epochs", type=int, default=20)
    b.add_argument("--patience", type=int, default=3)
    b.add_argument("--batch-size", type=int, default=512)
    b.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="model parameter for every variant (e.g. hidden=128)")
    b.add_argument("--only", help="comma list of substrings of variant names")
    b.add_argument("--loss", choices=values(Loss), help="training loss of every variant (default: auto)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--num-threads", type=int, default=0, help="CPU threads for torch (0: the job's share)")
    b.add_argument("--test", action="store_true", help="also test every variant (variants are chosen on "
                   "validation; the protocol tests only the refitted winner)")
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_ablation)


def cmd_bench_ablation(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import ablation as ba
    base_train = {k: v for k, v in (("loss", args.loss), ("num_threads", args.num_threads)) if v}
    res = ba.run(ws, args.dataset, args.device, args.epochs, args.patience, args.batch_size,
                 dict(kv.split("=", 1) for kv in args.param),
                 [o for o in (args.only or "").split(",") if o] or None, log=out.log, out=args.out,
                 base_train=base_train, test=args.test, seed=args.seed)
    out.result(res, ba.render(res))
    return 0


def _register_recommend(bsub) -> None:
    b = bsub.add_parser("recommend", help="latency of recommend() on the CPU (GNN, 235K items, kNN)")
    b.add_argument("--dataset", default="bench-demo-full")
    b.add_argument("--calls", type=int, default=200)
    b.add_argument("--num-threads", type=int, default=1)
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_recommend)


def cmd_bench_recommend(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import recommend as br
    res = br.run(ws, args.dataset, args.calls, args.num_threads, log=out.log, out=args.out)
    out.result(res, br.render(res))
    return 0


def _register_serve(bsub) -> None:
    b = bsub.add_parser("serve", help="latency and requests/s of POST /recommend (torch, compiled and ONNX runtimes)")
    b.add_argument("--dataset", default="bench-demo-wide",
                   help="dataset of the default run (default bench-demo-wide: the wide demo, ~240K items, "
                        "generated and built when missing; any bench-demo-<size> is)")
    b.add_argument("--run", default=None, help="run to serve (default: train a hidden-256 Graph Transformer)")
    b.add_argument("--runtimes", default="torch,compiled,onnx", help="comma-separated: torch,compiled,onnx")
    b.add_argument("--concurrency", default="1,16,64", help="comma-separated levels (default 1,16,64)")
    b.add_argument("--duration", type=float, default=10.0, help="seconds per level (default 10)")
    b.add_argument("--search", choices=values(Search), default="auto")
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_serve)


def cmd_bench_serve(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import serve as bs
    res = bs.run(ws, args.dataset, args.run, tuple(r for r in args.runtimes.split(",") if r),
                 tuple(int(c) for c in args.concurrency.split(",") if c), args.duration, args.search,
                 log=out.log, out=args.out)
    out.result(res, bs.render(res))
    return 0


def _register_ab(bsub) -> None:
    b = bsub.add_parser("ab", help="A/B serving: overhead against one run, nothing lost under load and a hot swap, "
                        "and (with --control) the sequential test's verdicts on simulated users, A/A included")
    b.add_argument("--run", required=True, help="the run served (in both arms for the overhead, losses and A/A)")
    b.add_argument("--control", default=None, help="arm A of the A/B verdict, e.g. baseline:pop@demo")
    b.add_argument("--dataset", default=None, help="whose test sessions (default: the run's dataset)")
    b.add_argument("--block", type=float, default=5.0, help="seconds per overhead block (default 5)")
    b.add_argument("--rounds", type=int, default=3, help="overhead blocks per server (default 3)")
    b.add_argument("--clients", type=int, default=64, help="concurrent /recommend clients (default 64)")
    b.add_argument("--load", type=float, default=20.0, help="seconds of load around the hot swap (default 20)")
    b.add_argument("--sessions", type=int, default=2000, help="simulated sessions of the A/B verdict (default 2000)")
    b.add_argument("--aa", type=int, default=20, help="A/A simulations (default 20)")
    b.add_argument("--aa-sessions", type=int, default=300, help="sessions per A/A simulation (default 300)")
    b.add_argument("--search", choices=values(Search), default="auto")
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_ab)


def cmd_bench_ab(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import ab
    res = ab.run(ws, args.run, args.control, args.dataset, args.block, args.rounds, args.clients, args.load,
                 args.sessions, args.aa, args.aa_sessions, args.search, log=out.log, out=args.out)
    out.result(res, ab.render(res))
    return 0


def _register_search(bsub) -> None:
    b = bsub.add_parser("search", help="cost of one top-k query: exact (fp32/bf16/fp16) and the PQ fast scan")
    b.add_argument("--run", default=None, help="a GNN run whose item table and session vectors to use")
    b.add_argument("--queries", type=int, default=1000)
    b.add_argument("--num-threads", type=int, default=1)
    b.add_argument("--out", type=Path)
    b.set_defaults(func=cmd_bench_search)


def cmd_bench_search(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.bench import search as bsr
    res = bsr.run(ws, args.run, args.queries, args.num_threads, log=out.log, out=args.out)
    out.result(res, bsr.render(res))
    return 0
