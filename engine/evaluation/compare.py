"""Two evaluated runs compared on the same test examples: "is the difference real?"

    res = compare_runs(ws, "gt-1", "vstan-tuned")     # per protocol: A and B with 95% intervals,
    render(res)                                       # A - B with its paired interval and p-values

Reads the per-example test ranks each run saved beside its results (`RunDir.test_ranks`), so no model
is loaded. Intervals resample test sessions (engine.evaluation.stats: the prefixes of one session are
correlated); the paired test flips each session's A/B labels (randomisation) and counts the sessions
each run does better on (sign test). The same statistics `sessrec bench quality` reports, for any
two runs on one dataset: a tuned baseline against a GNN trained elsewhere, two seeds, two settings.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from engine.core.errors import InputError
from engine.core.metrics import per_example_metrics
from engine.core.schema import Protocol
from engine.core.workspace import Workspace
from engine.data.refit import refit_name
from engine.evaluation.ranks import ExampleRanks
from engine.evaluation.stats import N_BOOT, bootstrap_ci, paired_test
from engine.evaluation.strata import STRATA, STRATUM_METRICS, stratum_values, test_repeat_mask

METRICS = ("recall@10", "mrr@10", "ndcg@10", "recall@20", "mrr@20", "ndcg@20")


def _ranks(ws: Workspace, run_id: str, protocol: str) -> ExampleRanks:
    run = ws.existing_run(run_id)
    path = run.test_ranks(protocol)
    if not path.exists():
        raise InputError(f"run {run_id} has no per-example test ranks for the {protocol} protocol ({path}): "
                         f"it was not tested under it (sessrec eval {run_id} --protocol {protocol})")
    return ExampleRanks.load(path)


def compare_runs(ws: Workspace, a: str, b: str, protocols: tuple[str, ...] = tuple(Protocol),
                 n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    if a == b:
        raise InputError(f"compare: {a} twice; name two runs")
    trains = [json.loads(ws.existing_run(r).config.read_text())["train"] for r in (a, b)]
    datasets = [t["dataset"] for t in trains]
    # a dataset and its refit twin hold the same test sessions (the examples are checked below)
    if refit_name(datasets[0]) != refit_name(datasets[1]):
        raise InputError(f"runs {a} ({datasets[0]}) and {b} ({datasets[1]}) were tested on different datasets")
    out: dict[str, Any] = {"a": a, "b": b, "dataset": datasets[0], "datasets": datasets,
                           "refit_of": [t.get("refit_of") or None for t in trains], "n_boot": n_boot,
                           "protocols": {}}
    for p in protocols:
        ra, rb = _ranks(ws, a, p), _ranks(ws, b, p)
        if not ra.same_examples(rb):
            raise InputError(f"runs {a} and {b}: their {p} test examples differ (the dataset was rebuilt "
                             f"between them?); a paired comparison needs the same examples")
        va = {m: v for m, v in per_example_metrics(ra.ranks).items() if m in METRICS}
        vb = {m: v for m, v in per_example_metrics(rb.ranks).items() if m in METRICS}
        ci_a = bootstrap_ci(va, ra.session, n_boot=n_boot, seed=seed)
        ci_b = bootstrap_ci(vb, ra.session, n_boot=n_boot, seed=seed)
        tests = paired_test(va, vb, ra.session, n_boot=n_boot, n_perm=n_boot, seed=seed)
        repeat = test_repeat_mask(ws, datasets[0], ra)
        out["protocols"][p] = {
            "examples": len(ra), "sessions": int(len(np.unique(ra.session))),
            "metrics": {m: {"a": ci_a[m].to_dict(), "b": ci_b[m].to_dict(), "a_minus_b": tests[m].to_dict()}
                        for m in va},
            **({"strata": {"a": stratum_values(va, repeat), "b": stratum_values(vb, repeat)}}
               if repeat is not None else {})}
    return out


def render(res: dict[str, Any]):
    """One row per protocol and metric: A, B (means), A - B with its paired 95% interval and the
    randomisation p-value (80 columns; the JSON has the rest)."""
    from engine.core.text import table
    rows = []
    for p, v in res["protocols"].items():
        for m, r in v["metrics"].items():
            t = r["a_minus_b"]
            rows.append([f"{p} {m}", round(r["a"]["mean"], 4), round(r["b"]["mean"], 4), f"{t['diff']:+.4f}",
                         f"{t['lo']:+.4f}..{t['hi']:+.4f}", float(f"{t['p_value']:.2g}")])
    for p, v in res["protocols"].items():
        st = v.get("strata")
        for name in STRATA if st else ():
            a, b = st["a"][name], st["b"][name]
            for m in STRATUM_METRICS:
                if a[m] is not None and b[m] is not None:
                    rows.append([f"{p} {m} {name} (n {a['n']:,})", round(a[m], 4), round(b[m], 4),
                                 f"{a[m] - b[m]:+.4f}", "", None])
    ex = "; ".join(f"{p}: {v['examples']:,} examples, {v['sessions']:,} sessions" for p, v in res["protocols"].items())
    refits = [f"{r} is a refit of {s}" for r, s in zip((res["a"], res["b"]), res.get("refit_of") or ()) if s]
    return table(f"A = {res['a']}, B = {res['b']} on {res['dataset']} (test)",
                 ["test", "A", "B", "A - B", "95% interval", "p"], rows,
                 caption=f"{ex}. Interval: paired bootstrap over sessions; p: paired randomisation test "
                         f"({res['n_boot']:,} draws); repeat / new: targets that do / do not repeat an item of "
                         f"their prefix. The JSON adds each run's interval and the sessions each does better on."
                         + (" " + "; ".join(refits) + " (trained on train + validation)." if refits else ""))
