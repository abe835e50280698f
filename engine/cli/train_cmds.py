"""`sessrec train | eval | runs | recommend | models | quickstart`.

Registering these commands imports no torch: the training flags come from `TrainConfig`, the model
flags from the model configs of the registry; the heavy modules are imported by the command that runs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import Any

from engine.cli.flags import add_config_flags, add_union_flags, bounded_int, config_names, field_type, given
from engine.cli.output import Output, err_console, table
from engine.config import TrainConfig
from engine.errors import InputError
from engine.models.registry import SPECS, get_spec
from engine.schema import Device, ModelKind, Protocol, Runtime, Search, Split, StopReason, values
from engine.workspace import Workspace

TRAIN_FLAGS = config_names(TrainConfig)
MODEL_FLAGS: list[str] = []          # filled by `register` (the union of the model configs' fields)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (or fit a baseline) on a built dataset")
    p.add_argument("--dataset", default=None, help="dataset name (default: demo)")
    p.add_argument("--model", default=None, type=model_name, metavar="MODEL",
                   help=f"one of {', '.join(SPECS)} (default graph_transformer)")
    p.add_argument("--run-id", help="name of the run folder (default: <model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last.pt")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel workers on this machine (one per GPU; CPU: they share the cores); "
                        "--batch-size stays the global batch")
    add_config_flags(p.add_argument_group("training"), TrainConfig)
    m = p.add_argument_group("model hyperparameters ([models] that have them; `sessrec models` lists all)")
    MODEL_FLAGS[:] = add_union_flags(m, {n: s.config for n, s in SPECS.items()})
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any model hyperparameter by name, repeatable")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    p.add_argument("run")
    p.add_argument("--split", default=Split.TEST.value, choices=values(Split))
    p.add_argument("--protocol", default="both", choices=[*values(Protocol), "both"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    p.add_argument("--eval-batch-size", type=field_type(TrainConfig, "eval_batch_size"), default=1024)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("runs", help="table of runs with status and metrics")
    p.add_argument("--dataset", help="only runs on this dataset")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="two tested runs on the same test examples: metrics with 95%% "
                       "intervals, the difference and a paired test")
    p.add_argument("a", metavar="RUN_A")
    p.add_argument("b", metavar="RUN_B")
    p.add_argument("--protocols", default=",".join(Protocol), help="comma list of last, prefixes")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples and permutations (default 1000)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("recommend", help="top-k next items for a session of raw item ids")
    p.add_argument("run", help="run id, or baseline:NAME@DATASET (e.g. baseline:sknn@demo)")
    p.add_argument("items", nargs="*", help="raw item ids, oldest first")
    p.add_argument("--k", type=bounded_int("k", 1, 100_000), default=10)
    p.add_argument("--device", default=Device.CPU.value, choices=values(Device))
    p.add_argument("--exclude-session-items", action="store_true", help="never recommend an item of the session")
    p.add_argument("--runtime", choices=values(Runtime), default="torch",
                   help="GNN runs: torch (eager), compiled (the encoder compiled by AOTInductor; needs a C++ "
                        "compiler) or onnx (ONNX Runtime); exports are made when missing")
    p.add_argument("--search", choices=values(Search), default="exact",
                   help="top-k over the catalogue: exact, or pq candidates scored exactly (see sessrec serve)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("models", help="list models and their hyperparameters")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("quickstart", help="demo end to end: generate, build, train, compare, recommend")
    p.add_argument("--size", default="small")
    p.add_argument("--model", default="graph_transformer", type=model_name, metavar="MODEL")
    p.add_argument("--epochs", type=field_type(TrainConfig, "epochs"), default=None)
    p.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    p.set_defaults(func=cmd_quickstart)


# ---- train ---------------------------------------------------------------------------------------
def model_name(text: str) -> str:
    """argparse type: a registered model name (the message lists the valid ones)."""
    try:
        return get_spec(text).name
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_values(args: argparse.Namespace) -> dict[str, Any]:
    """Model hyperparameters given as flags or `--param KEY=VALUE` (text values are parsed by the
    model's config)."""
    out = given(args, MODEL_FLAGS)
    for kv in getattr(args, "param", []) or []:
        if "=" not in kv:
            raise InputError(f"--param {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config from the flags; every value is checked here (exit 2 before any folder)."""
    spec = get_spec(args.model or "graph_transformer")
    values = model_values(args)
    spec.resolve(values)                     # unknown names, types, bounds, hidden % heads
    return TrainConfig(dataset=args.dataset or "demo", model=spec.name, model_params=values,
                       **given(args, TRAIN_FLAGS))


def cmd_train(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        raise InputError(f"--nproc: expected a number of workers >= 1, got {nproc}")
    if args.resume:
        extra = [f for f in given(args, TRAIN_FLAGS) if f not in ("epochs", "device")]
        if extra or args.model or args.dataset or args.run_id or model_values(args):
            raise InputError(f"--resume continues a run with its saved config; only --epochs and "
                             f"--device may change (got {', '.join(extra) or 'model/dataset options'})")
    if nproc > 1:                   # this process starts the workers and answers for them
        from engine.train.launch import launch_train
        return launch_train(args, ws, out, getattr(args, "argv", []))
    from engine.process import is_worker
    from engine.train.loop import StopFlag, fit
    from engine.train.parallel import PeerError, fit_distributed
    from engine.train.recorder import RunFailedError
    worker, main = is_worker(), True
    train = fit_distributed if worker else fit
    if worker:                      # one of N data-parallel workers (torchrun): rank 0 speaks for all
        main = int(os.environ["RANK"]) == 0
        if not main:
            out = Output(out.mode, quiet=True)
            out.emit = lambda obj: None      # type: ignore[method-assign]
    stop = StopFlag()
    stop.install()
    log = (lambda m: err_console.print(m, markup=False)) if not out.quiet else (lambda m: None)
    try:
        with out:
            if args.resume:
                final = train(None, ws, run_id=args.resume, resume=True, epochs=args.epochs, device=args.device,
                              log=log, stop=stop, progress=out.progress if main else None)
            else:
                final = train(train_config_from_args(args), ws, run_id=args.run_id, log=log, stop=stop,
                              progress=out.progress if main else None)
    except RunFailedError as e:
        ev = e.event
        if main:                   # rank 0 reports the run; another worker only its own cause
            out.emit({"type": "error", "error": ev.error, "error_kind": ev.error_kind,
                      "suggestion": ev.suggestion or None})
            err_console.print(f"sessrec: run failed: {ev.error}", markup=False, soft_wrap=True)
            if ev.suggestion:
                err_console.print(f"  suggestion: {ev.suggestion}", markup=False)
        elif ev.error_kind != "worker_lost":
            err_console.print(f"sessrec: worker {os.environ.get('RANK')}: {ev.error}", markup=False, soft_wrap=True)
        return 3 if ev.error_kind == "cuda_oom" else 1      # a worker then leaves at once (engine.__main__)
    except PeerError as e:          # rank 0 refused the run and says why
        return e.code
    if not main:
        return 0
    out.result({"run": final}, None)
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


# ---- eval ----------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.device import resolve_device
    from engine.train.checkpoint import load_run
    from engine.train.trainer import evaluate_split
    if args.eval_batch_size < 1:
        raise InputError("--eval-batch-size must be >= 1")
    device = resolve_device(args.device)
    lr = load_run(ws.existing_run(args.run), args.checkpoint, device, exact=True)
    model, data = lr.model, lr.data
    cfg = replace(lr.cfg, eval_batch_size=args.eval_batch_size)
    protocols = list(Protocol) if args.protocol == "both" else [Protocol(args.protocol)]
    with out:
        results = {p.value: evaluate_split(model, data, args.split, p, cfg, device, out.progress) for p in protocols}
    out.result({"run_id": args.run, "split": args.split, "results": results},
               metrics_table(f"{cfg.model} on {cfg.dataset} / {args.split} ({args.checkpoint} checkpoint, "
                             f"epoch {lr.epoch})", results))
    if out.mode != "jsonl":
        for proto, r in results.items():
            strata = r.get("strata", {})
            srows = [[f"length {k}", v.get("n"), v.get("recall@10"), v.get("mrr@10")]
                     for k, v in strata.get("length", {}).items()]
            srows += [[k, v.get("n"), v.get("recall@10"), v.get("mrr@10")]
                      for k, v in strata.get("repeat", {}).items()]
            out.print(table(f"strata ({proto})", ["stratum", "n", "Recall@10", "MRR@10"], srows))
    return 0


# ---- runs ----------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.runs.compare import compare_runs, render
    protocols = tuple(p for p in args.protocols.split(",") if p)
    bad = [p for p in protocols if p not in values(Protocol)]
    if bad or not protocols:
        raise InputError(f"--protocols {args.protocols!r}: expected a comma list of {', '.join(Protocol)}")
    if args.bootstrap < 100:
        raise InputError("--bootstrap must be >= 100")
    res = compare_runs(ws, args.a, args.b, protocols, n_boot=args.bootstrap)
    out.result({"compare": res}, render(res))
    return 0


def cmd_runs(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.runs import list_runs
    runs = [r for r in list_runs(ws) if not args.dataset or r.dataset == args.dataset]

    def status_cell(r) -> str:
        if r.error and not r.finished or r.status == "unreadable":
            return f"{r.status}\n{r.error}"
        head = (f"{r.status.replace('_', ' ')} {r.epochs_run}/{r.epochs or '?'}" if r.kind == ModelKind.GNN
                else str(r.status)) + (f" ({r.reason})" if r.reason == StopReason.PRUNED else "")
        return head + "\n" + (f"{r.seconds:.0f}s {r.device or ''}" if r.seconds else (r.device or "-"))
    # two lines per run (id over dataset, status over time) so that the table fits 80 columns
    rows = [[f"{r.run_id}\n{r.dataset or '?'}", status_cell(r), r.metric("val"), r.metric("test_last"),
             r.metric("test_prefixes")] for r in runs]
    skipped = sum(r.skipped_lines for r in runs)
    caption = (f"{skipped} unreadable line(s) in events files were skipped" if skipped else None)
    out.result({"runs": [r.summary() for r in runs]},
               table(f"runs in {ws.runs_dir}; Recall@10 of the best validation epoch and on test "
                     f"(protocols last / prefixes)",
                     ["run / dataset", "status / time", "val", "last", "prefixes"], rows, caption=caption)
               if runs else "no runs yet: `sessrec train --dataset NAME --model NAME`")
    return 0


# ---- recommend -----------------------------------------------------------------------------------
def cmd_recommend(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    import torch

    from engine.data.items import parse_item_ids
    from engine.recommend import Recommender
    torch.set_num_threads(1)   # one short lookup: thread start-up costs more than it saves
    ids = parse_item_ids(" ".join(args.items))
    rec = Recommender.for_target(ws, args.run, device=args.device, runtime=args.runtime, search=args.search)
    r = rec.recommend(ids, k=args.k, exclude_session_items=args.exclude_session_items)
    rows = [[i + 1, str(item), score, pop, "yes" if ins else ""] for i, (item, score, pop, ins)
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


# ---- quickstart ----------------------------------------------------------------------------------
def cmd_quickstart(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    """The main job without the app: demo data -> pipeline -> baseline + GNN -> recommendations."""
    from engine.cli import build_parser
    from engine.cli.data_cmds import cmd_demo
    from engine.data.artifacts import load_dataset
    from engine.train.loop import StopFlag, fit
    parser = build_parser()
    cmd_demo(parser.parse_args(["demo", "--size", args.size]), ws, out)
    name = "demo" if args.size == "small" else f"demo-{args.size}"
    stop = StopFlag()
    stop.install()
    log = (lambda m: err_console.print(m, markup=False)) if not out.quiet else (lambda m: None)
    finals = []
    for model in ("sknn", args.model):
        cfg = TrainConfig(dataset=name, model=model, device=args.device,
                          **({"epochs": args.epochs} if args.epochs else {}))
        with out:
            finals.append(fit(cfg, ws, log=log, stop=stop, progress=out.progress))
        if stop.requested:
            return 130
    for f in finals:
        _print_final(f, out)
    run_id = finals[-1]["run_id"]
    data = load_dataset(ws, name, stages=("items",))
    sample = data.test.take([0])
    raw = data.items.decode(sample.items[:-1][sample.items[:-1] > 0]).tolist()
    out.log(f"recommendations for a test session {raw} (its next item was "
            f"{int(data.items.decode(sample.items[-1:])[0])}):")
    cmd_recommend(parser.parse_args(["recommend", run_id, *map(str, raw)]), ws, out)
    return 0
