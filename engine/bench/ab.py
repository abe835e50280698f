"""`sessrec bench ab`: what A/B serving costs, whether it loses anything, and whether its verdicts
can be trusted, on a real server over loopback.

1. **Overhead**: `sessrec serve RUN` and `sessrec serve --arm A=RUN --arm B=RUN` (the same catalogue
   and model twice, so the only difference is the experiment) answer POST /recommend at concurrency 1
   in alternating blocks (the machine's drift hits both); p50 and p99 of each, and the difference.
2. **Nothing lost**: the A/B server under `clients` concurrent /recommend connections plus a
   quarter as many /feedback ones, with a hot swap of arm B in the middle (POST /admin/reload);
   then a clean stop, and the impression and feedback lines in the logs are counted against the
   answers the clients got (200 and 202).
3. **Verdicts** (with `--control`): the simulator (engine.ab.simulate) against A = the control
   (e.g. baseline:pop@D) and B = RUN, read by the sequential test after every session: how many
   sessions until it decides; then A/A tests (RUN in both arms) `--aa` times, each in a phase of its
   own with fresh session ids: how many declare a winner (nominally `alpha` of them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.ab.report import experiment_report
from engine.ab.simulate import simulate
from engine.bench.measure import machine, save_result
from engine.bench.serve import bench_sessions
from engine.core.config import SimulateConfig
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.serve.eventlog import read_log

ADMIN_KEY = "bench-ab-admin-key-0123456789"


def _start(ws: Workspace, args: list[str]) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "engine", "--workspace", str(ws.root), "--events", "jsonl", "serve", *args,
           "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "SESSREC_ADMIN_KEY": ADMIN_KEY, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    ev = json.loads(line) if line else {}
    if ev.get("type") != "serving":
        _stop(proc)
        raise InputError(f"the server did not start ({' '.join(args)}): {ev.get('error') or proc.stderr.read()[-2000:]}")
    return proc, ev


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)            # a clean stop writes out the logs
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _load(url: str, bodies: Path, concurrency: int, duration: float, path: str = "/recommend",
          ok: int = 200) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.bench.loadgen", url, str(bodies), "--concurrency",
                             str(concurrency), "--duration", str(duration), "--path", path, "--ok", str(ok)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _result(p: subprocess.Popen, timeout: float) -> dict:
    out, err = p.communicate(timeout=timeout)
    if p.returncode:
        raise InputError(f"load generator failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _reload(url: str, arm: str, target: str) -> None:
    import httpx
    r = httpx.post(url + "/admin/reload", json={"target": target, "arm": arm}, headers={"X-API-Key": ADMIN_KEY},
                   timeout=30)
    if r.status_code != 202:
        raise InputError(f"hot swap refused: {r.status_code} {r.text[:300]}")


def run(ws: Workspace, run_id: str, control: str | None = None, dataset: str | None = None, block_s: float = 5.0,
        rounds: int = 3, clients: int = 64, load_s: float = 20.0, sessions: int = 2000, aa: int = 20,
        aa_sessions: int = 300, search: str = "auto", log=print, out=None) -> dict[str, Any]:
    cfg = json.loads(ws.existing_run(run_id).config.read_text())["train"]
    dataset = dataset or cfg["dataset"]
    sess = bench_sessions(ws, dataset)
    result: dict[str, Any] = {"benchmark": "ab", "run": run_id, "dataset": dataset, "machine": machine(),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory() as tmp:
        plain_b, ab_b, fb_b = (Path(tmp) / n for n in ("plain.json", "ab.json", "fb.json"))
        plain_b.write_text(json.dumps([{"session_items": s, "k": 10} for s in sess]))
        ab_b.write_text(json.dumps([{"session_items": s, "k": 10, "session_id": f"bench-{i}"}
                                    for i, s in enumerate(sess)]))
        fb_b.write_text(json.dumps([{"session_id": f"bench-{i}", "item": s[0], "event": "click"}
                                    for i, s in enumerate(sess)]))
        exp = f"bench-ab-{int(time.time())}"
        # 1. overhead at concurrency 1, alternating blocks
        log(f"overhead: {run_id} alone against an A/B server of {run_id} twice, {rounds} x {block_s:g} s blocks ...")
        plain, plain_ev = _start(ws, [run_id, "--search", search])
        abp, ab_ev = _start(ws, ["--arm", f"A={run_id}", "--arm", f"B={run_id}", "--search", search,
                                 "--experiment", exp + "-overhead"])
        try:
            import httpx
            catalogue = httpx.get(plain_ev["url"] + "/health", timeout=10).json()["n_items"]
            blocks: dict[str, list[dict]] = {"single": [], "ab": []}
            for _ in range(rounds):
                blocks["single"].append(_result(_load(plain_ev["url"], plain_b, 1, block_s), block_s + 120))
                blocks["ab"].append(_result(_load(ab_ev["url"], ab_b, 1, block_s), block_s + 120))
        finally:
            _stop(plain)
            _stop(abp)
        p50 = {k: float(np.median([b["p50_ms"] for b in v])) for k, v in blocks.items()}
        p99 = {k: float(np.median([b["p99_ms"] for b in v])) for k, v in blocks.items()}
        result["overhead"] = {"p50_ms": p50, "p99_ms": p99, "p50_diff_ms": round(p50["ab"] - p50["single"], 3),
                              "blocks": blocks, "catalogue": catalogue, "search": plain_ev.get("search")}
        # 2. nothing lost under load and a hot swap
        log(f"losses: {clients} /recommend + {max(1, clients // 4)} /feedback clients for {load_s:g} s, arm B "
            f"hot-swapped halfway ...")
        name = exp + "-load"
        proc, ev = _start(ws, ["--arm", f"A={run_id}", "--arm", f"B={run_id}", "--search", search,
                               "--experiment", name])
        try:
            rec = _load(ev["url"], ab_b, clients, load_s)
            fbk = _load(ev["url"], fb_b, max(1, clients // 4), load_s, "/feedback", 202)
            time.sleep(load_s / 2)
            _reload(ev["url"], "B", run_id)
            r_rec, r_fb = _result(rec, load_s + 300), _result(fbk, load_s + 300)
        finally:
            _stop(proc)
        folder = ws.experiment(name)
        n_imp, n_fb = len(read_log(folder, "impressions")[0]), len(read_log(folder, "feedback")[0])
        phases = json.loads(folder.state.read_text())["phases"]
        result["losses"] = {"clients": clients, "seconds": load_s, "recommend": r_rec, "feedback": r_fb,
                            "impressions_logged": n_imp, "feedback_logged": n_fb,
                            "lost_impressions": r_rec["ok"] - n_imp, "lost_feedback": r_fb["ok"] - n_fb,
                            "hot_swap_phase": len(phases)}
    # 3. verdicts
    if control:
        result["verdicts"] = _verdicts(ws, run_id, control, dataset, sessions, aa, aa_sessions, search, exp, log)
    result["json_path"] = str(save_result(f"ab-{dataset}", result, out))
    return result


def _verdicts(ws, run_id, control, dataset, sessions, aa, aa_sessions, search, exp, log) -> dict:
    import httpx
    log(f"A/B: {control} (A) against {run_id} (B), up to {sessions} simulated sessions ...")
    proc, ev = _start(ws, ["--arm", f"A={control}", "--arm", f"B={run_id}", "--search", search,
                           "--experiment", exp + "-ab"])
    try:
        sim = simulate(ws, ev["url"], dataset, SimulateConfig(sessions=sessions, concurrency=4, max_seconds=3600))
    finally:
        _stop(proc)
    rep = experiment_report(ws, exp + "-ab")
    t = rep["tests"][0]
    out = {"ab": {"control": control, "sessions": sim.sessions, "verdict": t["verdict"], "p_value": t["p_value"],
                  "decided_at_sessions": t["decided_at_sessions"], "difference": t["difference"],
                  "ctr": [a["ctr"] for a in rep["arms"]], "session_ctr": [a["session_ctr"] for a in rep["arms"]]}}
    log(f"A/A: {run_id} in both arms, {aa} simulations of {aa_sessions} sessions ...")
    proc, ev = _start(ws, ["--arm", f"A={run_id}", "--arm", f"B={run_id}", "--search", search,
                           "--experiment", exp + "-aa"])
    phases: list[int] = []
    try:
        for i in range(aa):
            phase = httpx.post(ev["url"] + "/admin/arms", json={"split": [1, 1]}, headers={"X-API-Key": ADMIN_KEY},
                               timeout=30).json()["phase"]
            simulate(ws, ev["url"], dataset, SimulateConfig(sessions=aa_sessions, concurrency=4, seed=100 + i,
                                                            max_seconds=3600))
            phases.append(phase)
    finally:
        _stop(proc)
    reports = [experiment_report(ws, exp + "-aa", phase)["tests"][0] for phase in phases]
    wins = [r for r in reports if r["verdict"] != "no difference yet"]
    out["aa"] = {"simulations": aa, "sessions_each": aa_sessions, "winners_declared": len(wins),
                 "p_values": [round(r["p_value"], 4) for r in reports], "alpha": 0.05}
    return out


def render(result: dict[str, Any]):
    from rich.console import Group

    from engine.core.text import table
    o, lo = result["overhead"], result["losses"]
    t1 = table(f"A/B serving overhead: run {result['run']} ({o['catalogue']:,} items, {o['search']} search) alone "
               f"and in two arms, concurrency 1 (medians of {len(o['blocks']['single'])} blocks)", ["server", "p50 ms", "p99 ms"],
               [["single run", o["p50_ms"]["single"], o["p99_ms"]["single"]],
                ["A/B (2 arms)", o["p50_ms"]["ab"], o["p99_ms"]["ab"]],
                ["difference", o["p50_diff_ms"], round(o["p99_ms"]["ab"] - o["p99_ms"]["single"], 3)]])
    t2 = table(f"{lo['clients']} clients for {lo['seconds']:g} s with a hot swap of arm B (phase {lo['hot_swap_phase']})",
               ["", "answered", "logged", "lost", "errors"],
               [["impressions", lo["recommend"]["ok"], lo["impressions_logged"], lo["lost_impressions"],
                 lo["recommend"]["errors"]],
                ["feedback", lo["feedback"]["ok"], lo["feedback_logged"], lo["lost_feedback"], lo["feedback"]["errors"]]])
    parts = [t1, t2]
    v = result.get("verdicts")
    if v:
        ab, aa = v["ab"], v["aa"]
        parts.append(table("verdicts of the sequential test (simulated users)", ["test", "sessions", "result"],
                           [[f"{ab['control']} vs {result['run']}", ab["sessions"],
                             f"{ab['verdict']} (p {ab['p_value']:.2g}) after {ab['decided_at_sessions']} sessions"],
                            [f"A/A x {aa['simulations']}", aa["sessions_each"],
                             f"{aa['winners_declared']} of {aa['simulations']} declared a winner (alpha {aa['alpha']})"]],
                           caption=f"json: {result['json_path']}"))
    return Group(*parts)
