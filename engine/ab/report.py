"""`sessrec ab report`: an experiment's logs read into per-arm numbers and a verdict.

Per arm, in one phase (the latest unless asked): sessions, impressions, clicks, CTR@k (impressions
with a click on a listed item / impressions, Wilson interval), the mean session CTR (each
session's clicked impressions / its impressions, t interval), add-to-cart and conversion rates
(sessions with such an event, Wilson intervals), and against the first arm (the control) the
difference in mean session CTR with the always-valid p-value, confidence sequence and verdict of
the sequential test (`engine.ab.stats`); over all arms a sample-ratio-mismatch check.

A click counts for the latest impression of its session, before it, that listed the item
(`pandas.merge_asof`); clicks on items never shown to that session are reported as unattributed.
Sessions enter the test in the order of their first impression.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.ab.stats import mean_interval, sample_ratio, sequential_test, wilson
from engine.core.config import ABTestConfig
from engine.core.errors import InputError
from engine.core.workspace import ExperimentDir, Workspace
from engine.serve.eventlog import read_log


def find_experiment(ws: Workspace, name: str | None) -> ExperimentDir:
    names = ws.experiment_names()
    if name is None:
        if not names:
            raise InputError(f"no experiments in {ws.experiments_dir}: start one with "
                             f"`sessrec serve --arm A=RUN1 --arm B=RUN2`")
        return ws.experiment(names[-1])
    folder = ws.experiment(name)
    if not folder.exists:
        raise InputError(f"experiment {name!r} not found in {ws.experiments_dir}"
                         + (f"; known: {', '.join(names)}" if names else ""))
    return folder


def experiment_report(ws: Workspace, name: str | None = None, phase: int | None = None,
                      cfg: ABTestConfig | None = None) -> dict[str, Any]:
    import json

    import pandas as pd
    cfg = cfg or ABTestConfig()
    folder = find_experiment(ws, name)
    state = json.loads(folder.state.read_text())
    phases = {p["phase"]: p for p in state["phases"]}
    phase = phase if phase is not None else max(phases)
    if phase not in phases:
        raise InputError(f"experiment {folder.name} has no phase {phase}; phases: {', '.join(map(str, phases))}")
    arms = phases[phase]["arms"]
    names = [a["name"] for a in arms]
    imp_recs, skipped_i = read_log(folder, "impressions")
    fb_recs, skipped_f = read_log(folder, "feedback")
    imp = pd.DataFrame([r for r in imp_recs if r.get("phase") == phase],
                       columns=["id", "t", "phase", "session", "arm", "target", "items", "k", "n"])
    fb = pd.DataFrame([r for r in fb_recs if r.get("phase") == phase],
                      columns=["t", "phase", "session", "arm", "item", "event"])
    imp = imp.astype({"t": "float64"}).sort_values("t", kind="stable")
    fb = fb.astype({"t": "float64"})

    # clicks -> the impression they came from
    clicks = fb[fb["event"] == "click"].sort_values("t", kind="stable")
    shown = imp[["id", "t", "session", "items"]].explode("items").rename(columns={"items": "item"})
    shown = shown.dropna(subset=["item"]).astype({"item": "int64"}).sort_values("t", kind="stable")
    if len(clicks) and len(shown):
        joined = pd.merge_asof(clicks.astype({"item": "int64"}), shown.rename(columns={"t": "t_shown"}),
                               left_on="t", right_on="t_shown", by=["session", "item"], direction="backward")
        attributed = joined["id"].notna()
        clicked_ids = set(joined.loc[attributed, "id"])
        unattributed = int((~attributed).sum())
    else:
        clicked_ids, unattributed = set(), int(len(clicks))
    imp["clicked"] = imp["id"].isin(clicked_ids)

    # sessions: their arm, CTR and events, in the order they arrived
    per = imp.groupby("session", sort=False).agg(arm=("arm", "first"), first=("t", "min"),
                                                 impressions=("id", "size"), clicked=("clicked", "sum"))
    per = per.sort_values("first", kind="stable")
    per["ctr"] = per["clicked"] / per["impressions"]
    for event in ("addtocart", "transaction"):
        per[event] = per.index.isin(set(fb.loc[fb["event"] == event, "session"]))

    ks = sorted(int(k) for k in imp["k"].unique()) if len(imp) else []
    out_arms = []
    for a in arms:
        s = per[per["arm"] == a["name"]]
        i = imp[imp["arm"] == a["name"]]
        n_sess, n_imp, n_clk = len(s), len(i), int(i["clicked"].sum())
        row = {"arm": a["name"], "target": a["target"], "run_id": a.get("run_id"), "weight": a["weight"],
               "sessions": n_sess, "impressions": n_imp, "clicks": n_clk,
               "ctr": n_clk / n_imp if n_imp else None, "ctr_interval": wilson(n_clk, n_imp, cfg.alpha),
               "session_ctr": float(s["ctr"].mean()) if n_sess else None,
               "session_ctr_interval": mean_interval(s["ctr"].to_numpy(), cfg.alpha)}
        for event, key in (("addtocart", "addtocart"), ("transaction", "conversion")):
            c = int(s[event].sum())
            row[f"{key}s"] = c
            row[f"{key}_rate"] = c / n_sess if n_sess else None
            row[f"{key}_interval"] = wilson(c, n_sess, cfg.alpha)
        out_arms.append(row)

    order, values = per["arm"].to_numpy(), per["ctr"].to_numpy()
    control = names[0]
    tests = []
    for a in names[1:]:
        seq = sequential_test(order, values, control, a, cfg.mixture_sd, cfg.alpha, cfg.min_sessions)
        tests.append({"control": control, "arm": a, "metric": "session_ctr", "difference": seq.difference,
                      "interval": seq.interval, "p_value": seq.p_value, "decided_at_sessions": seq.decided_at,
                      "looks": seq.looks, "verdict": seq.verdict(cfg.alpha, control, a)})
    observed = [r["sessions"] for r in out_arms]
    srm_p = sample_ratio(observed, [a["weight"] for a in arms])
    return {"experiment": folder.name, "phase": phase, "phases": sorted(phases), "started": phases[phase]["started"],
            "k": ks, "config": cfg.to_dict(), "arms": out_arms, "tests": tests,
            "srm": {"p_value": srm_p, "mismatch": srm_p is not None and srm_p < cfg.srm_alpha,
                    "observed": observed, "expected_shares": [a["weight"] for a in arms]},
            "unattributed_clicks": unattributed, "skipped_lines": skipped_i + skipped_f,
            "feedback_events": int(len(fb))}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _interval(iv) -> str:
    if not iv or iv[0] is None:
        return "-"
    return f"[{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def render(rep: dict[str, Any]):
    """Tables for the terminal: the arms, then each test (fits 80 columns)."""
    from rich.console import Group

    from engine.core.text import table
    alpha = rep["config"]["alpha"]
    rows = [[f"{a['arm']}\n{a['target']}", f"{a['sessions']:,}\n{a['impressions']:,}",
             f"{_pct(a['ctr'])}\n{_interval(a['ctr_interval'])}",
             f"{_pct(a['session_ctr'])}\n{_interval(a['session_ctr_interval'])}",
             f"{_pct(a['conversion_rate'])}\n{_interval(a['conversion_interval'])}"] for a in rep["arms"]]
    srm = rep["srm"]
    srm_text = ("sample ratio: no sessions yet" if srm["p_value"] is None else
                f"sample ratio {srm['observed']} against {srm['expected_shares']}: p = {srm['p_value']:.3g}"
                + (" MISMATCH: the split is broken, do not trust the comparison" if srm["mismatch"] else " (ok)"))
    k = ",".join(map(str, rep["k"])) or "?"
    arms = table(f"experiment {rep['experiment']}, phase {rep['phase']} (of {len(rep['phases'])}); "
                 f"{100 * (1 - alpha):g}% intervals; lists of k={k}",
                 ["arm / target", "sessions\nimpressions", f"CTR@{k}", "session CTR", "conversion"], rows,
                 caption=srm_text + (f"; {rep['unattributed_clicks']} click(s) on items not shown"
                                     if rep["unattributed_clicks"] else ""))
    trows = [[f"{t['arm']} - {t['control']}", "-" if t["difference"] is None else f"{100 * t['difference']:+.2f} pts",
              _interval(t["interval"]), f"{t['p_value']:.3g}", t["verdict"],
              "-" if t["decided_at_sessions"] is None else f"{t['decided_at_sessions']:,}"] for t in rep["tests"]]
    tests = table(f"session CTR, mSPRT (always valid: read it at any time), alpha {alpha:g}",
                  ["arms", "difference", "confidence seq.", "p", "verdict", "decided at\n(sessions)"], trows)
    return Group(arms, tests)
