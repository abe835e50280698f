"""`sessrec tune`: hyperparameter search on the validation split (Optuna, TPE), one training run per
trial, studies stored in the workspace and resumable; `sessrec tune --show` prints a stored study.

Registering the command imports neither torch nor Optuna: its flags come from the same configs as
`sessrec train`'s (a flag given is fixed for every trial and leaves the search space).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli.flags import add_config_flags, add_union_flags, config_names, field_type, given
from engine.cli.output import Output, err_console
from engine.cli.train_cmds import model_name, model_values
from engine.core.config import TrackingConfig, TrainConfig
from engine.core.errors import InputError
from engine.core.progress import Progress
from engine.core.schema import ModelKind, Protocol, values
from engine.core.text import table
from engine.core.workspace import Workspace
from engine.models.registry import SPECS, get_spec
from engine.tune.setup import TuneSetup, default_name

DEFAULT_METRIC = "mrr@20"
# set by the tune command itself: --seed seeds the sampler and every trial, --protocol is val_protocol
TUNE_TRAIN_FLAGS = config_names(TrainConfig, exclude=("val_protocol", "seed"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune a model's hyperparameters on the validation split (Optuna)",
                       description="Each trial is a training run (listed by `sessrec runs`) scored on the "
                       "validation split; the test split is never read. A flag given below is fixed for "
                       "every trial; the others of the model's search space are tuned. Rerunning the same "
                       "command continues the study until --trials trials have finished.")
    p.add_argument("--dataset", default=None, help="dataset name (default: demo)")
    p.add_argument("--model", default=None, type=model_name, metavar="MODEL",
                   help=f"one of {', '.join(SPECS)}")
    p.add_argument("--trials", type=int, default=None, help="finished trials the study should have in total")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help=f"validation metric to maximise, e.g. recall@10, ndcg@20 (default {DEFAULT_METRIC})")
    p.add_argument("--protocol", default=Protocol.PREFIXES.value, choices=values(Protocol),
                   help="validation protocol of the metric (default prefixes)")
    p.add_argument("--study", default=None, help="study name (default <dataset>-<model>-<metric>)")
    p.add_argument("--seed", type=field_type(TrainConfig, "seed"), default=0,
                   help="seed of the sampler and of every trial's training")
    p.add_argument("--show", action="store_true", help="print a stored study (or list them) without running")
    p.add_argument("--json", action="store_true", help="print the study as one JSON document on stdout")
    add_config_flags(p, TrackingConfig)
    add_config_flags(p.add_argument_group("training (fixed for every trial)"), TrainConfig,
                     exclude=("val_protocol", "seed"))
    m = p.add_argument_group("model hyperparameters (given: fixed; not given: tuned when in the space)")
    add_union_flags(m, {n: s.config for n, s in SPECS.items()})
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any model hyperparameter by name, fixed, repeatable")
    p.set_defaults(func=cmd_tune)


def setup_from_args(args: argparse.Namespace) -> TuneSetup:
    """The study's setup from the flags, checked by `TuneSetup.from_values` (exit 2 before any trial)."""
    return TuneSetup.from_values(args.dataset, args.model, args.metric, args.protocol, args.seed,
                                 train=given(args, TUNE_TRAIN_FLAGS), params=model_values(args))


def cmd_tune(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    import importlib.util
    if importlib.util.find_spec("optuna") is None:      # the engine itself runs without it (GPU boxes)
        raise InputError("sessrec tune needs Optuna: pip install 'optuna>=4,<6' (or reinstall sessrec)")
    if args.show:
        return _show(args, ws, out)
    setup = setup_from_args(args)
    if args.trials is None or args.trials < 1:
        raise InputError("--trials N (N >= 1): how many finished trials the study should have")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError("--timeout must be > 0 seconds")
    if not ws.dataset(setup.dataset).exists:
        known = ws.dataset_names()
        raise InputError(f"dataset {setup.dataset!r} not found in {ws.datasets_dir}"
                         + (f"; datasets: {', '.join(known)}" if known else "; build one first (sessrec demo)"))
    from engine.tune.spaces import space_for
    space = space_for(setup.model, setup.fixed)
    name = args.study or default_name(setup.dataset, setup.model, setup.metric)
    return _run(ws, out, name, setup, space, args.trials, args.timeout, args.json, tracking=args.tracking)


def _run(ws: Workspace, out: Output, name: str, setup, space: dict, trials: int, timeout: float | None,
         as_json: bool, tracking: str | None = None) -> int:
    from engine.train.loop import StopFlag
    from engine.tune import study as S
    from engine.tune.objective import Objective, TrialFailed
    stop = StopFlag()
    stop.install()
    lock = S.lock(ws, name).acquire()
    try:
        study = S.open_for_trials(ws, name, setup)
        done = S.finished(study)
        remaining = trials - done
        say = (lambda m: err_console.print(m, markup=False, soft_wrap=True)) if not out.quiet else (lambda m: None)
        say(f"study {name}: {done} finished trial(s), {max(0, remaining)} to run; tuning "
            f"{', '.join(space) or 'nothing (no hyperparameters)'} for validation {setup.metric} "
            f"({setup.protocol}); database {ws.studies_db}")
        gnn_log = say if get_spec(setup.model).kind == ModelKind.GNN else None     # a line per epoch

        def on_trial(st, t) -> None:
            row = S.trial_row(t)
            out.emit({"type": "trial", "study": name, **row})
            say(_trial_line(row, setup.metric))
            n = S.finished(st)
            out.progress(Progress("tune", n, trials, "trials", f"trial {t.number}: {row['state']}"))
            if stop.requested:
                st.stop()
        if remaining > 0:
            with out:
                out.progress(Progress("tune", done, trials, "trials", "starting"))
                study.optimize(Objective(ws, setup, space, stop, log=gnn_log, tracking=tracking, study=name),
                               n_trials=remaining,
                               timeout=timeout, catch=(TrialFailed,), callbacks=[on_trial])
    finally:
        lock.release()
    rep = S.report(ws, study)
    _print_report(rep, out, as_json)
    return 130 if stop.requested else 0


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trial_line(row: dict, metric: str) -> str:
    state = row["state"] + (f" after epoch {row['pruned_at']}" if row.get("pruned_at") else "")
    value = f"{metric} {row['value']:.4f}" if row.get("value") is not None else ""
    tail = f"  error: {row['error']}" if row.get("error") and row["state"] == "fail" else ""
    return (f"trial {row['number']:>3}  {state:<10} {value:<16} {_secs(row.get('seconds'))}s  "
            f"{_params_text(row['params'])}  run {row.get('run_id') or '-'}{tail}")


def _print_report(rep: dict, out: Output, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rep, indent=1, default=str) + "\n")
        return
    setup = rep.get("setup") or {}
    metric = setup.get("metric", "value")
    rows = [[t["number"], t["value"], t["state"], _secs(t.get("seconds")), t.get("run_id") or "-",
             _params_text(t["params"])] for t in rep["top"]]
    c = rep["counts"]
    title = (f"study {rep['study']}: {setup.get('model')} on {setup.get('dataset')}, validation {metric} "
             f"({setup.get('protocol')}); trials: {c['complete']} complete, {c['pruned']} pruned, "
             f"{c['fail']} failed" + (f", {c['running']} running (process {rep['running_pid']})"
                                      if rep.get("running_pid") else ""))
    out.result({"study": rep}, table(title, ["#", metric, "state", "s", "run", "params"], rows))
    if out.mode == "jsonl":
        return
    best = rep.get("best")
    if not best:
        out.console.print("no complete trial yet")
        return
    out.console.print(f"best: trial {best['number']}, {metric} {best['value']:.4f} (run {best['run_id']}): "
                      f"{_params_text(best['params']) or '(no hyperparameters)'}; train it again, with its "
                      f"test evaluation:", markup=False, highlight=False)
    # one line however narrow the terminal: it is meant to be copied
    out.console.print("  " + (best.get("command") or "?"), markup=False, highlight=False, soft_wrap=True,
                      style="bold")


def _show(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.tune import study as S
    name = args.study
    if name is None and args.dataset and args.model:
        name = default_name(args.dataset, args.model, args.metric)
    if name is not None:
        _print_report(S.report(ws, S.load(ws, name)), out, args.json)
        return 0
    summaries = S.summaries(ws)
    if args.json:
        sys.stdout.write(json.dumps({"studies": summaries}, indent=1, default=str) + "\n")
        return 0
    rows = [[s["study"], s["model"], s["dataset"], s["metric"], f"{s['finished']}/{s['trials']}", s["best"]]
            for s in summaries]
    out.result({"studies": summaries},
               table(f"studies in {ws.studies_db} (sessrec tune --show --study NAME)",
                     ["study", "model", "dataset", "metric", "done", "best"], rows)
               if rows else "no studies yet: `sessrec tune --dataset D --model M --trials N`")
    return 0
