"""`sessrec train`: train a model (or fit a baseline) on a built dataset; `--nproc N` data-parallel.

Registering the command imports no torch: the training flags come from `TrainConfig`, the model
flags from the model configs of the registry; the heavy modules are imported when it runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from engine.cli.flags import add_config_flags, add_union_flags, config_names, given
from engine.cli.output import Output, err_console
from engine.cli.run_cmds import print_final
from engine.core.config import TrackingConfig, TrainConfig
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.models.registry import SPECS, get_spec

TRAIN_FLAGS = config_names(TrainConfig)
MODEL_FLAGS: list[str] = []          # filled by `register` (the union of the model configs' fields)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (or fit a baseline) on a built dataset")
    p.add_argument("--dataset", default=None, help="dataset name (default: demo)")
    p.add_argument("--model", default=None, type=model_name, metavar="MODEL",
                   help=f"one of {', '.join(SPECS)} (default graph_transformer)")
    p.add_argument("--run-id", help="name of the run folder (default: <model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last.pt")
    p.add_argument("--warm-start", metavar="RUN", default=None,
                   help="a new run of RUN's model and hyperparameters starting from its weights (items it knew keep "
                        "their vectors, new items start fresh), on --dataset (default: RUN's dataset, as it is now)")
    p.add_argument("--refit", action="store_true",
                   help="the papers' protocol: choose the epoch on validation (a selection run, test not "
                        "read), then train again on train + validation (the dataset's refit twin, same "
                        "test) for that many epochs, and test once")
    p.add_argument("--refit-from", metavar="RUN",
                   help="refit a finished selection run (its config and chosen epoch) on train + validation")
    p.add_argument("--no-test", action="store_true",
                   help="validation only, the test split not read: a selection run (compare several on "
                        "validation, then `--refit-from` the best, which tests once)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel workers on this machine (one per GPU; CPU: they share the cores); "
                        "--batch-size stays the global batch")
    add_config_flags(p.add_argument_group("training"), TrainConfig)
    add_config_flags(p, TrackingConfig)
    m = p.add_argument_group("model hyperparameters ([models] that have them; `sessrec models` lists all)")
    MODEL_FLAGS[:] = add_union_flags(m, {n: s.config for n, s in SPECS.items()})
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any model hyperparameter by name, repeatable")
    p.set_defaults(func=cmd_train)


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


def train_config_from_args(args: argparse.Namespace, ws: Workspace | None = None) -> TrainConfig:
    """The run's config from the flags; every value is checked here (exit 2 before any folder)."""
    if getattr(args, "warm_start", None):
        return warm_config(args, ws)
    spec = get_spec(args.model or "graph_transformer")
    values = model_values(args)
    spec.resolve(values)                     # unknown names, types, bounds, hidden % heads
    return TrainConfig(dataset=args.dataset or "demo", model=spec.name, model_params=values,
                       **given(args, TRAIN_FLAGS))


def warm_config(args: argparse.Namespace, ws: Workspace | None) -> TrainConfig:
    """`--warm-start RUN`: RUN's model and hyperparameters (not to be changed), RUN's dataset unless
    --dataset, the training flags given here over the defaults."""
    import json
    if args.model or model_values(args):
        raise InputError("--warm-start takes the model and hyperparameters of the run it starts from; "
                         "leave out --model and the model's flags")
    if ws is None:
        raise InputError("--warm-start needs a workspace")
    run = ws.existing_run(args.warm_start)
    try:
        saved = TrainConfig.from_dict(json.loads(run.config.read_text())["train"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{run.config}: not a readable run config ({e})") from None
    return TrainConfig(dataset=args.dataset or saved.dataset, model=saved.model, model_params=saved.model_params,
                       warm_start=run.run_id, **given(args, TRAIN_FLAGS))


def cmd_train(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        raise InputError(f"--nproc: expected a number of workers >= 1, got {nproc}")
    if args.resume:
        extra = [f for f in given(args, TRAIN_FLAGS) if f not in ("epochs", "device")]
        if extra or args.model or args.dataset or args.run_id or model_values(args) or args.warm_start:
            raise InputError(f"--resume continues a run with its saved config; only --epochs and "
                             f"--device may change (got {', '.join(extra) or 'model/dataset options'})")
    if nproc > 1:                   # a bad --tracking is refused here, before any worker starts
        from engine.tracking import tracker_for
        tracker_for(ws, args.tracking)
    if args.refit or args.refit_from:
        return _refit(args, ws, out, nproc)
    if nproc > 1:                   # this process starts the workers and answers for them
        from engine.cli.launch import launch_train
        cfg = None if args.resume else train_config_from_args(args, ws)
        return launch_train(cfg, ws, out, getattr(args, "argv", []), nproc, resume=args.resume, run_id=args.run_id)
    from engine.core.process import is_worker
    from engine.train.distributed import WorkerLost
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
    log = out.log_stderr
    common = dict(log=log, stop=stop, progress=out.progress if main else None, tracking=args.tracking,
                  evaluate_test=not args.no_test)
    try:
        with out:
            if args.resume:
                final = train(None, ws, run_id=args.resume, resume=True, epochs=args.epochs, device=args.device,
                              **common)
            else:
                final = train(train_config_from_args(args, ws), ws, run_id=args.run_id, **common)
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
    except WorkerLost as e:         # a peer was lost before this worker's run had started
        err_console.print(f"sessrec: worker {os.environ.get('RANK', '?')}: {e}", markup=False, soft_wrap=True)
        return 1
    if not main:
        return 0
    out.result({"run": final}, None)
    if out.mode != "jsonl":
        print_final(final, out)
    return 0


def _refit(args: argparse.Namespace, ws: Workspace, out: Output, nproc: int) -> int:
    """`--refit` (selection, then refit) or `--refit-from RUN` (the refit of a finished run)."""
    if args.warm_start:
        raise InputError("--warm-start with --refit: a refit trains from scratch on train + validation; "
                         "give one of them")
    if args.resume:
        raise InputError("--refit / --refit-from start new runs; --resume continues one (a stopped refit: "
                         "--resume its run id)")
    if args.no_test:
        raise InputError("--no-test with --refit: a refit's selection run never reads the test split and "
                         "its refit tests once; give one of them")
    if nproc > 1:
        raise InputError("--refit with --nproc: train the selection run with --nproc first, then "
                         "`sessrec train --refit-from RUN` (one process)")
    if args.refit_from and (args.refit or args.model or args.dataset or given(args, TRAIN_FLAGS)
                            or model_values(args)):
        raise InputError("--refit-from RUN takes the run's own config; give no --refit, model, dataset or "
                         "training options with it")
    from engine.train.loop import StopFlag
    from engine.train.recorder import RunFailedError
    from engine.train.refit import fit_refit, refit_from
    stop = StopFlag()
    stop.install()
    log = out.log_stderr
    try:
        with out:
            if args.refit_from:
                final = refit_from(ws, args.refit_from, run_id=args.run_id, log=log, stop=stop,
                                   progress=out.progress)
            else:
                final = fit_refit(train_config_from_args(args), ws, run_id=args.run_id, log=log, stop=stop,
                                  progress=out.progress)
    except RunFailedError as e:
        ev = e.event
        out.emit({"type": "error", "error": ev.error, "error_kind": ev.error_kind, "suggestion": ev.suggestion or None})
        err_console.print(f"sessrec: run failed: {ev.error}", markup=False, soft_wrap=True)
        return 3 if ev.error_kind == "cuda_oom" else 1
    out.result({"run": final}, None)
    if out.mode != "jsonl":
        sel = final.get("selection")
        if sel:
            out.log(f"selection run {sel['run_id']}: best epoch {sel.get('best_epoch')} on validation "
                    f"(test not read)")
        print_final(final, out)
    return 0
