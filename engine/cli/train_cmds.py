"""`sessrec train | eval | runs | recommend | models | quickstart`."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.output import Output, err_console, table
from engine.config import EXAMPLE_MODES, LOSSES, SCHEDULES, TrainConfig
from engine.errors import InputError
from engine.workspace import Workspace

MODEL_FLAGS = {"hidden": int, "layers": int, "heads": int, "readout": str, "graph_mode": str,
               "dropout": float}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (or fit a baseline) on a built dataset")
    p.add_argument("--dataset", default=None, help="dataset name (default: demo)")
    p.add_argument("--model", default=None, help="model name (see `sessrec models`)")
    p.add_argument("--run-id", help="name of the run folder (default: time-model-dataset)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last.pt")
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--loss", choices=LOSSES, help=f"(default {d.loss})")
    g.add_argument("--negatives", type=int, help="sampled: uniform negatives; bpr: per example")
    g.add_argument("--examples", choices=EXAMPLE_MODES, help="prefixes (all) | last (one per session)")
    g.add_argument("--val-protocol", choices=EXAMPLE_MODES)
    g.add_argument("--patience", type=int)
    g.add_argument("--device", help="auto | cpu | cuda (default auto)")
    g.add_argument("--no-bf16", dest="bf16", action="store_false", default=None)
    g.add_argument("--compile", action="store_true", default=None)
    g.add_argument("--seed", type=int)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--threads", dest="num_threads", type=int, help="CPU threads for torch")
    m = p.add_argument_group("model (see `sessrec models` for every parameter)")
    m.add_argument("--hidden", type=int)
    m.add_argument("--layers", type=int)
    m.add_argument("--heads", type=int)
    m.add_argument("--readout", help="mean | max | last | attention")
    m.add_argument("--graph-mode", help="transitions | cooc")
    m.add_argument("--dropout", type=float)
    m.add_argument("--pe", dest="use_pe", action="store_true", default=None, help="use Laplacian PE")
    m.add_argument("--no-pe", dest="use_pe", action="store_false", help="no Laplacian PE")
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any model parameter, repeatable")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--protocol", default="both", choices=["last", "prefixes", "both"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1024)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("runs", help="table of runs with status and metrics")
    p.add_argument("--dataset", help="only runs on this dataset")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("recommend", help="top-k next items for a session of raw item ids")
    p.add_argument("run", help="run id, or baseline:NAME@DATASET (e.g. baseline:sknn@demo)")
    p.add_argument("items", nargs="*", help="raw item ids, oldest first")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("models", help="list models and their default hyperparameters")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("quickstart", help="demo end to end: generate, build, train, compare, recommend")
    p.add_argument("--size", default="small")
    p.add_argument("--model", default="graph_transformer")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_quickstart)


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "use_pe", None) is not None:
        out["use_pe"] = args.use_pe
    for kv in getattr(args, "param", []) or []:
        if "=" not in kv:
            raise InputError(f"--param {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        out[k.strip()] = v.strip()
    return out


TRAIN_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "grad_clip", "loss",
                "negatives", "examples", "val_protocol", "patience", "device", "bf16", "compile", "seed",
                "eval_batch_size", "num_threads")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    from engine.models.registry import get_spec
    fields = {f: getattr(args, f) for f in TRAIN_FIELDS if getattr(args, f, None) is not None}
    model = args.model or "graph_transformer"
    get_spec(model)   # unknown model: one line with the valid names
    return TrainConfig(dataset=args.dataset or "demo", model=model, model_params=_model_overrides(args),
                       **fields)


def cmd_train(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.train.loop import RunFailed, StopFlag, fit
    stop = StopFlag()
    stop.install()
    log = (lambda m: err_console.print(m, markup=False)) if not out.quiet else (lambda m: None)
    try:
        if args.resume:
            given = [f for f in TRAIN_FIELDS if getattr(args, f, None) is not None and f not in ("epochs", "device")]
            if given or args.model or args.dataset or _model_overrides(args):
                raise InputError(f"--resume continues a run with its saved config; only --epochs and "
                                 f"--device may change (got {', '.join(given) or 'model/dataset options'})")
            final = fit(None, ws, run_id=args.resume, resume=True, epochs=args.epochs, device=args.device,
                        to_stdout=out.mode == "jsonl", log=log, stop=stop, progress=out.progress)
        else:
            cfg = train_config_from_args(args)
            final = fit(cfg, ws, run_id=args.run_id, to_stdout=out.mode == "jsonl", log=log, stop=stop,
                        progress=out.progress)
    except RunFailed as e:
        ev = e.event
        err_console.print(f"sessrec: run failed: {ev.get('error')}", markup=False)
        if ev.get("suggestion"):
            err_console.print(f"  suggestion: {ev['suggestion']}", markup=False)
        return 3 if ev.get("error_kind") == "cuda_oom" else 1
    if out.mode != "jsonl":
        _print_final(final, out)
    return 0


def _print_final(final: dict, out: Output) -> None:
    out.log(f"run {final['run_id']}: {final.get('status')} (best epoch {final.get('best_epoch')}, "
            f"{final.get('seconds')}s)")
    test = final.get("test") or {}
    if test:
        out.print(metrics_table("test (best epoch)", test))


# (label, section of an evaluation result or None for its top level, key)
_METRIC_ROWS = [("Recall@10", "metrics", "recall@10"), ("NDCG@10", "metrics", "ndcg@10"),
                ("MRR@10", "metrics", "mrr@10"), ("Recall@20", "metrics", "recall@20"),
                ("NDCG@20", "metrics", "ndcg@20"), ("examples (n)", None, "n"),
                ("unseen targets", None, "unseen_targets"), ("coverage@10", None, "coverage@10"),
                ("mean popularity@10", None, "popularity@10")]


def metrics_table(title: str, results: dict[str, dict]):
    """One row per metric, one column per protocol: stays readable at 80 columns."""
    rows = []
    for label, section, key in _METRIC_ROWS:
        vals = [(r.get(section) or {} if section else r).get(key) for r in results.values()]
        if any(v is not None for v in vals):
            rows.append([label, *vals])
    return table(title, ["metric", *results], rows)


def _resolve_run(ws: Workspace, run: str):
    d = ws.run(run).root
    if not (d / "config.json").exists():
        known = ws.run_ids()
        raise InputError(f"run {run!r} not found in {ws.runs_dir}"
                         + (f"; recent runs: {', '.join(known[-5:])}" if known else "; no runs yet (sessrec train)"))
    return d


def cmd_eval(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    import numpy as np
    import torch
    from engine.config import from_dict
    from engine.data.artifacts import load_dataset
    from engine.device import resolve_device
    from engine.evaluate import evaluate
    from engine.train.batches import BatchBuilder, SessionStore
    from engine.train.checkpoint import load_checkpoint, rebuild_model
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    run_dir = _resolve_run(ws, args.run)
    ckpt = load_checkpoint(run_dir / f"{args.checkpoint}.pt")
    cfg = from_dict(TrainConfig, ckpt["config"])
    device = resolve_device(args.device)
    data = load_dataset(ws, cfg.dataset, with_pe=False)
    if data.items.fingerprint() != ckpt["item_fingerprint"]:
        raise InputError(f"dataset {cfg.dataset!r} was rebuilt with another item index; retrain")
    model = rebuild_model(ckpt, data)
    if hasattr(model, "to"):
        model = model.to(device)
    mode = getattr(model, "graph_mode", "none")
    builder = BatchBuilder(SessionStore(data.split(args.split), device), data.n_items,
                           mode if mode in ("transitions", "cooc") else "none", data.graph)
    pop = np.concatenate([[0], data.items.train_counts])
    protocols = ["last", "prefixes"] if args.protocol == "both" else [args.protocol]
    results = {}
    with out:
        for proto in protocols:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda" and cfg.bf16):
                results[proto] = evaluate(model, builder, data.split(args.split), protocol=proto,
                                          batch_size=args.batch_size, popularity=pop, progress=out.progress)
    out.result({"run_id": args.run, "split": args.split, "results": results},
               metrics_table(f"{cfg.model} on {cfg.dataset} / {args.split} ({args.checkpoint} checkpoint, "
                             f"epoch {ckpt.get('epoch')})", results))
    if out.mode != "jsonl":
        for proto, r in results.items():
            strata = r.get("strata", {})
            srows = [[f"length {k}", v.get("n"), v.get("recall@10"), v.get("mrr@10")]
                     for k, v in strata.get("length", {}).items()]
            srows += [[k, v.get("n"), v.get("recall@10"), v.get("mrr@10")]
                      for k, v in strata.get("repeat", {}).items()]
            out.print(table(f"strata ({proto})", ["stratum", "n", "Recall@10", "MRR@10"], srows))
    return 0


def cmd_runs(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.runs import list_runs
    runs = [r for r in list_runs(ws) if not args.dataset or r.dataset == args.dataset]
    # two lines per run (id over dataset, status over time) so that the table fits 80 columns
    rows = [[f"{r.run_id}\n{r.dataset}",
             (f"{r.status.replace('_', ' ')} {r.epochs_run}/{r.epochs}" if r.kind == "gnn" else r.status)
             + "\n" + (f"{r.seconds:.0f}s {r.device or ''}" if r.seconds else (r.device or "-")),
             r.metric("val"), r.metric("test_last"), r.metric("test_prefixes")] for r in runs]
    out.result({"runs": [{"run_id": r.run_id, "model": r.model, "dataset": r.dataset, "status": r.status,
                          "epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "best_val": r.best_val,
                          "test": r.test, "seconds": r.seconds, "device": r.device, "error": r.error}
                         for r in runs]},
               table(f"runs in {ws.runs_dir}; Recall@10 of the best validation epoch and on test "
                     f"(protocols last / prefixes)",
                     ["run / dataset", "status / time", "val", "last", "prefixes"], rows)
               if runs else "no runs yet: `sessrec train --dataset NAME --model NAME`")
    return 0


def cmd_recommend(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    import torch
    from engine.recommend import Recommender, parse_item_ids
    torch.set_num_threads(1)   # one short lookup: thread start-up costs more than it saves
    if args.k < 1:
        raise InputError("--k must be >= 1")
    ids = parse_item_ids(" ".join(args.items))
    if args.run.startswith("baseline:"):
        spec = args.run[len("baseline:"):]
        if "@" not in spec:
            raise InputError("baseline recommender: use baseline:NAME@DATASET, e.g. baseline:sknn@demo")
        name, dataset = spec.split("@", 1)
        rec = Recommender.for_baseline(ws, dataset, name, device=args.device)
    else:
        rec = Recommender.load(_resolve_run(ws, args.run), ws, device=args.device)
    r = rec.recommend(ids, k=args.k)
    rows = [[i + 1, item, score, pop, "yes" if ins else ""] for i, (item, score, pop, ins)
            in enumerate(zip(r.items, r.scores, r.popularity, r.in_session))]
    caption = []
    if r.unknown:
        caption.append(f"unknown ids ignored: {', '.join(map(str, r.unknown))}")
    if r.fallback:
        caption.append("no known item: popularity fallback")
    out.result({"items": r.items, "scores": r.scores, "popularity": r.popularity, "in_session": r.in_session,
                "unknown": r.unknown, "fallback": r.fallback, "source": r.source, "ms": round(r.seconds * 1000, 2)},
               table(f"top-{args.k} from {r.source} ({r.seconds * 1000:.1f} ms)",
                     ["rank", "item", "score", "train count", "in session"], rows,
                     caption="; ".join(caption) or None))
    return 0


def cmd_models(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.models.registry import all_specs
    specs = all_specs()
    # two columns (name and kind | description, defaults, CPU preset): readable at 80 columns
    rows = [[f"{s.name}\n({s.kind})",
             f"{s.description}\ndefaults: " + ", ".join(f"{k}={v}" for k, v in s.defaults.items())
             + ("\non CPU: " + ", ".join(f"{k}={v}" for k, v in s.cpu_overrides.items()) if s.cpu_overrides else "")]
            for s in specs.values()]
    out.result({"models": {s.name: {"kind": s.kind, "description": s.description, "defaults": s.defaults,
                                    "cpu_overrides": s.cpu_overrides} for s in specs.values()}},
               table("models (`sessrec train --model NAME --param KEY=VALUE`)", ["model", "description"], rows))
    return 0


def cmd_quickstart(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    """The main job without the app: demo data -> pipeline -> baseline + GNN -> recommendations."""
    from engine.cli.data_cmds import cmd_demo
    ns = argparse.Namespace(size=args.size, name=None, seed=0, no_build=False, force=False,
                            **{k: None for k in ("gap_minutes", "min_length", "max_length", "min_item_support",
                                                 "split", "train_ratio", "val_ratio", "blackout_days",
                                                 "test_days", "window", "pe_dim")})
    cmd_demo(ns, ws, out)
    name = "demo" if args.size == "small" else f"demo-{args.size}"
    from engine.train.loop import StopFlag, fit
    stop = StopFlag()
    stop.install()
    log = (lambda m: err_console.print(m, markup=False)) if not out.quiet else (lambda m: None)
    finals = []
    for model in ("sknn", args.model):
        cfg = TrainConfig(dataset=name, model=model, device=args.device,
                          **({"epochs": args.epochs} if args.epochs else {}))
        finals.append(fit(cfg, ws, log=log, stop=stop, to_stdout=out.mode == "jsonl"))
        if stop.requested:
            return 130
    for f in finals:
        _print_final(f, out)
    run_id = finals[-1]["run_id"]
    from engine.data.artifacts import load_dataset
    data = load_dataset(ws, name, with_pe=False)
    sample = data.test.take([0])
    raw = data.items.decode(sample.items[:-1][sample.items[:-1] > 0]).tolist()
    ns = argparse.Namespace(run=run_id, items=[str(i) for i in raw], k=10, device="cpu")
    out.log(f"recommendations for a test session {raw} (its next item was "
            f"{int(data.items.decode(sample.items[-1:])[0])}):")
    cmd_recommend(ns, ws, out)
    return 0
