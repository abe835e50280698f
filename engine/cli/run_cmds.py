"""`sessrec eval | runs | compare`: a run's checkpoint evaluated on a split, every run with its
status and metrics, two tested runs compared on the same test examples; and the tables of a run's
results that `train` and `quickstart` print too."""

from __future__ import annotations

import argparse
from dataclasses import replace

from engine.cli.flags import field_type
from engine.cli.output import Output
from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.schema import Device, ModelKind, Protocol, Split, StopReason, values
from engine.core.text import table
from engine.core.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
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


def print_final(final: dict, out: Output) -> None:
    out.log(f"run {final['run_id']}: {final.get('status')} (best epoch {final.get('best_epoch')}, "
            f"{final.get('seconds')}s)")
    test = final.get("test") or {}
    if test:
        out.print(metrics_table("test (refit: last epoch)" if final.get("refit") else "test (best epoch)", test))


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
    from engine.core.device import resolve_device
    from engine.models.checkpoint import load_run
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
    from engine.evaluation.compare import compare_runs, render
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
    rows = [[f"{r.run_id}\n{r.dataset or '?'}",
             status_cell(r) + (f"\nrefit of {r.refit_of}" if r.refit_of else ""), r.metric("val"),
             r.metric("test_last"), r.metric("test_prefixes")] for r in runs]
    skipped = sum(r.skipped_lines for r in runs)
    caption = (f"{skipped} unreadable line(s) in events files were skipped" if skipped else None)
    out.result({"runs": [r.summary() for r in runs]},
               table(f"runs in {ws.runs_dir}; Recall@10 of the best validation epoch and on test "
                     f"(protocols last / prefixes)",
                     ["run / dataset", "status / time", "val", "last", "prefixes"], rows, caption=caption)
               if runs else "no runs yet: `sessrec train --dataset NAME --model NAME`")
    return 0
