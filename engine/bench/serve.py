"""`sessrec bench serve`: latency and throughput of POST /recommend over loopback.

For each runtime (torch, compiled, onnx) a real `sessrec serve` process serves the run and a separate load
process (engine.bench.loadgen) posts sessions of 10 items (test sessions of the run's dataset, raw
ids), k = 10, at each concurrency for a bounded time. Reports requests/s, p50/p90/p99 latency,
errors, the search in use and its measured agreement with exact top-10 on held-out sessions.
Without --run a Graph Transformer (hidden 256, one epoch of sampled softmax) is trained first, on
the `wide` demo by default (~240K items in its index, RetailRocket's catalogue size; generated and
built once): the latency hardly depends on how well it learned, but the candidate count the search
needs does.
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

from engine.bench.measure import machine, save_result
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.data.artifacts import load_dataset
from engine.serve.scrape import fetch_health

SESSION_ITEMS = 10
DEFAULT_DATASET = "bench-demo-wide"


def bench_sessions(ws: Workspace, dataset: str, n: int = 500, seed: int = 0) -> list[list[int]]:
    """`n` sessions of SESSION_ITEMS raw ids from the test split (long sessions cut to their first
    10 items; short ones joined with the next until 10)."""
    data = load_dataset(ws, dataset, stages=("items",))
    raw = data.items.decode(data.test.items.astype(np.int64))
    raw = raw[raw >= 0] if (raw >= 0).any() else data.items.raw_ids
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, max(1, len(raw) - SESSION_ITEMS), size=n)
    return [raw[s:s + SESSION_ITEMS].tolist() for s in starts]


def ensure_dataset(ws: Workspace, dataset: str, log) -> None:
    """`dataset` built; a `bench-demo-<size>` dataset is generated and built when missing."""
    import re

    from engine.bench.pipeline import ensure_demo
    from engine.data.pipeline import build
    m = re.fullmatch(r"bench-demo-(\w+)", dataset)
    if m is None:
        if not ws.dataset(dataset).exists:
            raise InputError(f"dataset {dataset!r} not found: build it first (sessrec demo, sessrec data "
                             f"import), or leave --dataset at its default ({DEFAULT_DATASET})")
        return
    ds = ensure_demo(ws, m.group(1), log=log)
    log(f"building {dataset} (stages already built are kept) ...")
    build(ds)


def train_default_run(ws: Workspace, dataset: str, log) -> str:
    """`bench-serve-<dataset>`: a Graph Transformer, hidden 256, one epoch of sampled softmax (trained
    once). It trains in a child process (`sessrec train`), so this process, which then drives the
    servers and the load, does not keep the training's memory (on the wide demo it had reached 20 GB
    when the kernel killed it during the third server's start)."""
    run_id = f"bench-serve-{dataset}"
    if ws.run(run_id).best.exists():
        return run_id
    ensure_dataset(ws, dataset, log)
    log(f"training {run_id}: graph_transformer, hidden 256, one epoch of sampled softmax ...")
    cmd = [sys.executable, "-m", "engine", "--workspace", str(ws.root), "train", "--dataset", dataset,
           "--model", "graph_transformer", "--hidden", "256", "--epochs", "1", "--loss", "sampled",
           "--device", "cpu", "--run-id", run_id]
    # its progress and errors go to this terminal (stderr); its result table is not wanted here
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if res.returncode or not ws.run(run_id).best.exists():
        raise InputError(f"training {run_id} failed (exit {res.returncode}; its error is above): "
                         f"{' '.join(cmd[1:])}")
    return run_id


def _start(ws: Workspace, run_id: str, runtime: str, search: str) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "engine", "--workspace", str(ws.root), "--events", "jsonl", "serve", run_id,
           "--port", "0", "--runtime", runtime, "--search", search]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    ev = json.loads(line) if line else {}
    if ev.get("type") != "serving":
        proc.kill()
        raise InputError(f"the server for {run_id} ({runtime}) did not start: {ev.get('error') or proc.stderr.read()[-2000:]}")
    return proc, ev


def run(ws: Workspace, dataset: str = DEFAULT_DATASET, run_id: str | None = None,
        runtimes: tuple[str, ...] = ("torch", "compiled", "onnx"), levels: tuple[int, ...] = (1, 16, 64),
        duration: float = 10.0, search: str = "auto", log=print, out=None) -> dict[str, Any]:
    if run_id is None:
        run_id = train_default_run(ws, dataset, log)
    else:
        dataset = json.loads(ws.existing_run(run_id).config.read_text())["train"]["dataset"]
    sessions = bench_sessions(ws, dataset)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.json"
        bodies.write_text(json.dumps([{"session_items": s, "k": 10} for s in sessions]))
        for runtime in runtimes:
            log(f"serving {run_id} with the {runtime} runtime ({search} search) ...")
            t0 = time.perf_counter()
            proc, ev = _start(ws, run_id, runtime, search)
            try:
                startup = time.perf_counter() - t0
                h = fetch_health(ev["url"], timeout=10)
                if h is None:
                    raise InputError(f"{ev['url']}/health did not answer")
                for c in levels:
                    log(f"  concurrency {c}: {duration:g} s ...")
                    res = subprocess.run([sys.executable, "-m", "engine.bench.loadgen", ev["url"], str(bodies),
                                          "--concurrency", str(c), "--duration", str(duration)],
                                         capture_output=True, text=True, timeout=duration + 120,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})
                    if res.returncode:
                        raise InputError(f"load generator failed: {res.stderr[-2000:]}")
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                    s = h["search"]
                    rows.append({"runtime": runtime, "search": s["kind"], "candidates": s.get("candidates"),
                                 "agreement@10": s.get("agreement"), "catalogue": h["n_items"],
                                 "startup_s": round(startup, 1), **row})
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    result = {"benchmark": "serve", "dataset": dataset, "run": run_id, "session_items": SESSION_ITEMS,
              "k": 10, "duration_s": duration, "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": rows}
    result["json_path"] = str(save_result(f"serve-{dataset}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.core.text import table
    # the search: its kind, for pq its calibrated candidate count and agreement with exact top-10
    rows = [[r["runtime"],
             r["search"] + (f" {r['candidates']} {r['agreement@10']:.1%}" if r["search"] == "pq" else ""),
             r["concurrency"], r["requests"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]]
            for r in result["rows"]]
    cat = result["rows"][0]["catalogue"] if result["rows"] else "?"
    return table(f"POST /recommend over loopback: run {result['run']} ({cat:,} items), sessions of "
                 f"{result['session_items']} items, k=10, {result['duration_s']:g} s per level",
                 ["runtime", "search", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"], rows,
                 caption=f"json: {result['json_path']}")
