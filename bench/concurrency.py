"""Concurrency benchmark: a dataset build beside a training, run by the app's own JobManager.

    python bench/concurrency.py --workspace DIR [--build-size small] [--train-size small]
        [--model graph_transformer] [--epochs 1] [--examples last] [--param hidden=64]
        [--scenarios abcd] [--out FILE]

Scenarios (wall time from the training's start to the end of both jobs):
  a  one after the other (the training, then the build)
  b  together, without thread budgets: each child sees every core (the behaviour before budgets)
  c  together, policy share: each job its share of the cores
  d  policy queue: the build waits for the training

The training starts first; the build starts once the training has begun (its run_started event), as
when a user builds a dataset while a run trains. Both are real engine children (`python -m engine`
of this checkout). Both datasets are generated and built once (not timed); the timed build reruns
every stage of its dataset (`data build NAME --force`: the full pipeline, ingest to encodings). Prints a table and writes JSON to bench/results/concurrency-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))      # this checkout's engine and tui, whichever sessrec is installed

from engine.bench.measure import machine, save_result  # noqa: E402
from engine.core.schema import JobPolicy  # noqa: E402
from engine.core.threads import BUDGET_FILE_ENV, THREAD_ENV_VARS, available_cores  # noqa: E402
from engine.core.workspace import Workspace  # noqa: E402
from engine.jobs import BuildRequest, DemoRequest, Job, JobManager, JobSettings, TrainRequest, run_to_end  # noqa: E402
from engine.runs import RunStore, read_run  # noqa: E402

SCENARIOS = {"a": "one after the other", "b": "together, no budgets", "c": "together, share",
             "d": "queue"}


def child_env() -> dict[str, str]:
    """This process's environment without thread settings (so that b is really 'every core'), with
    this checkout first on the children's path."""
    env = {k: v for k, v in os.environ.items()
           if k not in (*THREAD_ENV_VARS, "OMP_WAIT_POLICY", BUDGET_FILE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class Watch:
    """The threads each job of one scenario started with."""

    def __init__(self) -> None:
        self.threads_at_start: dict[str, int | None] = {}

    def on_change(self, job: Job) -> None:
        if job.running:
            self.threads_at_start.setdefault(job.id, job.threads)


async def wait_until(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def job_row(job: Job, watch: Watch) -> dict[str, Any]:
    return {"title": job.title, "status": str(job.status), "seconds": round(job.elapsed() or 0.0, 2),
            "threads_at_start": watch.threads_at_start.get(job.id), "error": job.error}


async def run_scenario(key: str, ws: Workspace, args: argparse.Namespace, train_ds: str) -> dict[str, Any]:
    watch = Watch()
    policy = JobPolicy.QUEUE if key == "d" else JobPolicy.SHARE
    m = JobManager(ws.root, on_change=watch.on_change, env=child_env(), kill_after=30, cores=args.cores,
                   thread_budgets=key != "b", settings=JobSettings(policy=policy))
    runs = RunStore(ws)        # the training's progress comes from its run folder, as in the app
    run_id = f"bench-concurrency-{key}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = {"epochs": args.epochs, "device": "cpu", "examples": args.examples}
    params = dict(p.split("=", 1) for p in args.param)
    t0 = time.monotonic()
    train = m.start(TrainRequest(train_ds, args.model, options=options, params=params, run_id=run_id))
    if key == "a":
        await m.wait(train, args.timeout)
    else:
        def begun() -> bool:
            st = runs.get(run_id) if ws.run(run_id).exists else None
            return (st is not None and st.started is not None) or not train.active
        await wait_until(begun, args.timeout)
    build_name = f"bench-build-{args.build_size}"
    build = m.start(BuildRequest(build_name, force=True))
    # what the training's budget file says while the build runs (it reads it once poll() is wired)
    train_threads_beside = train.threads if train.running and build.running else None
    await m.wait(train, args.timeout)
    await m.wait(build, args.timeout)
    total = time.monotonic() - t0
    if train.active or build.active:
        m.cancel_all()
        await asyncio.sleep(1)
    epoch_seconds = list(read_run(ws, run_id).epoch_seconds) if ws.run(run_id).exists else []
    shutil.rmtree(ws.run(run_id).root, ignore_errors=True)
    return {"scenario": key, "what": SCENARIOS[key], "total_s": round(total, 2),
            "train": {**job_row(train, watch), "epoch_seconds": epoch_seconds,
                      "budget_beside_build": train_threads_beside},
            "build": job_row(build, watch),
            "ok": train.status == "done" and build.status == "done"}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    ws = Workspace.open(args.workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    train_ds = f"bench-train-{args.train_size}"
    for size, name in ((args.train_size, train_ds), (args.build_size, f"bench-build-{args.build_size}")):
        if not ws.dataset(name).exists:
            print(f"generating and building {name} (not timed)...", flush=True)
            prep = await run_to_end(JobManager(ws.root, env=child_env()), DemoRequest(size, name), timeout=args.timeout)
            if prep.status != "done":
                raise SystemExit(f"concurrency: could not generate {name}: {prep.error}")
    results = []
    for key in args.scenarios:
        print(f"scenario {key}: {SCENARIOS[key]}...", flush=True)
        results.append(await run_scenario(key, ws, args, train_ds))
        r = results[-1]
        print(f"  {r['total_s']:.1f} s (training {r['train']['seconds']:.1f} s, build {r['build']['seconds']:.1f} s)"
              + ("" if r["ok"] else f"  FAILED: {r['train']['error'] or r['build']['error']}"), flush=True)
    return {"benchmark": "concurrency", "machine": machine(), "cores": args.cores,
            "options": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}


def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console

    from engine.core.text import table
    base = next((r["total_s"] for r in res["results"] if r["scenario"] == "a"), None)
    rows = []
    for r in res["results"]:
        tr, bd = r["train"], r["build"]
        epoch = tr["epoch_seconds"][0] if tr["epoch_seconds"] else None
        rows.append([f"{r['scenario']} {r['what']}", f"{r['total_s']:.1f}",
                     f"{r['total_s'] / base:.2f}" if base else "-", f"{tr['seconds']:.1f}",
                     f"{epoch:.1f}" if epoch is not None else "-", f"{bd['seconds']:.1f}",
                     "/".join(str(x or "-") for x in (tr["threads_at_start"], tr["budget_beside_build"],
                                                      bd["threads_at_start"])),
                     "yes" if r["ok"] else "NO"])
    # threads: the training's at start / its budget while the build runs / the build's at start
    Console().print(table(f"build + training on {res['cores']} cores (seconds)",
                          ["scenario", "total", "vs a", "train", "epoch", "build", "threads", "ok"], rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", type=Path, help="workspace folder (default $SESSREC_HOME or ./workspace)")
    p.add_argument("--build-size", default="small", choices=["tiny", "small", "full"],
                   help="demo size the build job generates (default small)")
    p.add_argument("--train-size", default="small", choices=["tiny", "small", "full"],
                   help="demo size the training uses (default small)")
    p.add_argument("--model", default="graph_transformer")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--examples", default="last", choices=["last", "prefixes"],
                   help="training examples: last (one per session; a short epoch, default) or prefixes")
    p.add_argument("--param", action="append", default=None, metavar="KEY=VALUE",
                   help="model parameter (default hidden=64)")
    p.add_argument("--scenarios", default="abcd", help="which of a, b, c, d to run, in order")
    p.add_argument("--cores", type=int, default=available_cores(), help="cores the jobs share")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per job at most")
    p.add_argument("--out", type=Path, help="JSON result path (default bench/results/concurrency-<time>.json)")
    args = p.parse_args(argv)
    args.param = args.param or ["hidden=64"]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad or any("=" not in kv for kv in args.param):
        p.error(f"--scenarios takes letters of {''.join(SCENARIOS)}; --param takes KEY=VALUE")
    res = asyncio.run(main_async(args))
    print_table(res)
    print(f"written: {save_result('concurrency', res, args.out)}")
    return 0 if all(r["ok"] for r in res["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
