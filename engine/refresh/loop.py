"""`sessrec refresh DATASET --serving URL [--append PATH ...]`: new data in, a better model out.

One refresh is a *cycle* of steps, each recorded in `workspace/refresh/DATASET/events.jsonl` (one
JSON line per finished step, appended through LineAppender) before the next begins:

    started    the run in service (read from the server's /health; an A/B server's --arm), the chunks
    appended   every --append chunk in the dataset's manifest (`data append`; again: a no-op)
    built      the pipeline rebuilt (its stages are atomic and cached: a rerun finishes an interrupted one)
    trained    a warm-started run `<cycle>-warm` of the serving run's model (resumed with --resume when
               it was interrupted)
    validated  both runs' validation metric on today's validation split (the serving run through its
               own, archived item index: items it never saw count as misses)
    decided    promote = new - serving > margin (the guard), with both values and the margin
    promoted   the server hot-reloaded the new run (POST /admin/reload) and /health names it
    finished   what serves now

A rerun after a kill at any point continues the unfinished cycle from its first missing step. Only
the server's hot reload changes what is served, and it swaps one model for the other at once, so
the server serves the old run or the promoted one, never something in between; a promotion that was
decided but not confirmed is checked against /health and requested again. One refresh of a dataset
runs at a time (a lock in its folder).

`SESSREC_REFRESH_KILL_AFTER=STEP` makes the process kill itself (SIGKILL) right after recording STEP:
the fault injection behind the tests of every interruption.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

from engine.core.atomic import LineAppender
from engine.core.config import RefreshConfig, TrainConfig
from engine.core.errors import InputError, SessrecError
from engine.core.locks import FolderLock
from engine.core.schema import Protocol, Split
from engine.core.workspace import RefreshDir, Workspace
from engine.serve.scrape import fetch_health, request_reload

STEPS = ("started", "appended", "built", "trained", "validated", "decided", "promoted", "finished")
KILL_ENV = "SESSREC_REFRESH_KILL_AFTER"
RELOAD_WAIT_S = 300.0


class RefreshError(SessrecError):
    """A step could not be done; the cycle stays open and a rerun retries that step."""


def read_cycle(folder: RefreshDir) -> dict[str, dict]:
    """The steps of the latest cycle (step name -> its record); {} when there is none."""
    if not folder.events.exists():
        return {}
    steps: dict[str, dict] = {}
    for line in folder.events.read_bytes().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue              # a line torn by a kill: that step is done again
        if not isinstance(ev, dict) or ev.get("step") not in STEPS:
            continue
        if ev["step"] == "started":
            steps = {}
        steps[ev["step"]] = ev
    return steps


class _Log:
    def __init__(self, folder: RefreshDir, cycle: str) -> None:
        folder.root.mkdir(parents=True, exist_ok=True)
        self.file, self.cycle = LineAppender(folder.events, "refresh log"), cycle

    def write(self, step: str, **fields: Any) -> dict:
        ev = {"step": step, "cycle": self.cycle, "time": round(time.time(), 3), **fields}
        self.file.append(json.dumps(ev))
        if os.environ.get(KILL_ENV) == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return ev


def serving_run(url: str, arm: str | None, key: str | None) -> str:
    """The run the server at `url` serves (an A/B server: the run of `arm`)."""
    h = fetch_health(url, api_key=key, timeout=10)
    if h is None:
        raise RefreshError(f"{url}/health did not answer: is the server running?")
    exp = h.get("experiment")
    if exp is None:
        if arm:
            raise InputError(f"--arm {arm}: {url} runs no A/B experiment")
        run = h.get("run_id")
    else:
        arms = {a["name"]: a for a in exp["arms"]}
        if arm not in arms:
            raise InputError(f"--arm: {url} runs experiment {exp['name']} with arms {', '.join(arms)}; say which "
                             f"arm to refresh")
        run = arms[arm].get("run_id")
    if not run:
        raise InputError(f"{url} serves a baseline, not a run: refresh warm-starts a trained GNN run")
    return run


def refresh(ws: Workspace, dataset: str, url: str, chunks: list[Path], cfg: RefreshConfig, arm: str | None = None,
            key: str | None = None, device: str = "auto", chunk_format: str | None = None,
            log: Callable[[str], None] = lambda m: None, progress=None) -> dict:
    folder = ws.refresh(dataset)
    folder.root.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder.lock, f"a refresh of {dataset} is running ({{who}}); wait for it").acquire()
    try:
        return _refresh(ws, folder, dataset, url, chunks, cfg, arm, key, device, chunk_format, log, progress)
    finally:
        lock.release()


def _refresh(ws: Workspace, folder: RefreshDir, dataset: str, url: str, chunks: list[Path], cfg: RefreshConfig,
                  arm: str | None, key: str | None, device: str, chunk_format: str | None,
                  log: Callable[[str], None], progress) -> dict:
    from engine.data.manifest import Dataset
    from engine.data.pipeline import build
    done = read_cycle(folder)
    if done and "finished" not in done:
        cycle = done["started"]["cycle"]
        log(f"continuing {cycle} after {', '.join(s for s in STEPS if s in done)}")
        rec = _Log(folder, cycle)
        if chunks and [str(p.resolve()) for p in chunks] != done["started"]["chunks"]:
            raise InputError(f"refresh {cycle} of {dataset} was interrupted with other chunks "
                             f"({', '.join(done['started']['chunks']) or 'none'}); rerun it with those")
    else:
        old = serving_run(url, arm, key)
        cycle, n = f"refresh-{time.strftime('%Y%m%d-%H%M%S')}", 1
        while ws.run(f"{cycle}-warm").root.exists():       # two cycles in one second
            n += 1
            cycle = f"refresh-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        rec = _Log(folder, cycle)
        done = {"started": rec.write("started", dataset=dataset, url=url, arm=arm, serving_run=old,
                                     chunks=[str(p.resolve()) for p in chunks], config=cfg.to_dict())}
        log(f"{cycle}: {url} serves {old}")
    start = done["started"]
    old_run, new_run = start["serving_run"], f"{cycle}-warm"

    if "appended" not in done:
        ds = Dataset.load(ws, dataset)
        for p in map(Path, start["chunks"]):
            ds.append_chunk(p, chunk_format or str(ds.config.format))
        done["appended"] = rec.write("appended", chunks=start["chunks"])
    if "built" not in done:
        log(f"building {dataset} ...")
        results = build(Dataset.load(ws, dataset), progress=progress)
        done["built"] = rec.write("built", stages=[r.name for r in results if r.ran])
    if "trained" not in done:
        done["trained"] = rec.write("trained", **_train(ws, dataset, old_run, new_run, cfg, device, log, progress))
    if "validated" not in done:
        log(f"validating {old_run} and {new_run} on today's validation split ({cfg.metric}) ...")
        values = {r: val_metric(ws, r, cfg.metric, device) for r in (old_run, new_run)}
        done["validated"] = rec.write("validated", metric=cfg.metric, serving=values[old_run], new=values[new_run])
    v = done["validated"]
    if "decided" not in done:
        promote = v["new"] - v["serving"] > cfg.margin
        done["decided"] = rec.write("decided", promote=promote, serving=v["serving"], new=v["new"], margin=cfg.margin,
                                    reason=(f"{v['metric']} {v['new']:.4f} vs {v['serving']:.4f}: "
                                            + ("better by more than" if promote else "not better by more than")
                                            + f" the margin {cfg.margin:g}"))
        log(f"guard: {done['decided']['reason']} -> " + (f"promote {new_run}" if promote else f"keep {old_run}"))
    promote = done["decided"]["promote"]
    if promote and "promoted" not in done:
        _promote(url, new_run, start.get("arm"), key, log)
        done["promoted"] = rec.write("promoted", run=new_run)
    serving = new_run if promote else old_run
    return rec.write("finished", promoted=promote, serving=serving, previous=old_run, new_run=new_run,
                     values={"metric": v["metric"], "serving": v["serving"], "new": v["new"]})


def _train(ws: Workspace, dataset: str, old_run: str, new_run: str, cfg: RefreshConfig, device: str, log,
           progress) -> dict:
    from engine.runs import read_run
    from engine.train.loop import StopFlag, fit
    stop = StopFlag()
    stop.install()
    run = ws.run(new_run)
    if run.exists:
        st = read_run(ws, new_run)
        if st.status.succeeded:
            return {"run": new_run, "status": str(st.status)}
        log(f"resuming {new_run} ...")
        final = fit(None, ws, run_id=new_run, resume=True, log=log, stop=stop, progress=progress)
    else:
        saved = TrainConfig.from_dict(json.loads(ws.existing_run(old_run).config.read_text())["train"])
        train = TrainConfig(dataset=dataset, model=saved.model, model_params=saved.model_params,
                            epochs=cfg.epochs, batch_size=saved.batch_size, lr=saved.lr, loss=saved.loss,
                            device=device, seed=saved.seed, warm_start=old_run)
        log(f"training {new_run}: {saved.model} warm-started from {old_run}, {cfg.epochs} epoch(s) ...")
        final = fit(train, ws, run_id=new_run, log=log, stop=stop, progress=progress)
    if stop.requested or final.get("status") not in ("completed", "early_stopped"):
        raise RefreshError(f"training {new_run} ended {final.get('status')}: rerun the refresh to continue it")
    return {"run": new_run, "status": final.get("status"), "best_epoch": final.get("best_epoch")}


def val_metric(ws: Workspace, run_id: str, metric: str, device: str = "auto") -> float:
    """`run_id`'s best checkpoint on the dataset's validation split now (protocol prefixes)."""
    from engine.core.device import resolve_device
    from engine.models.checkpoint import load_run
    from engine.train.trainer import evaluate_split
    dev = resolve_device(device)
    lr = load_run(ws.existing_run(run_id), "best", dev)
    return float(evaluate_split(lr.model, lr.data, Split.VAL, Protocol.PREFIXES, lr.cfg, dev)["metrics"][metric])


def _promote(url: str, run: str, arm: str | None, key: str | None, log) -> None:
    """Hot-reload `run` into the server and wait until /health names it."""
    def served() -> str | None:
        h = fetch_health(url, api_key=key, timeout=10)
        if h is None:
            return None
        if h.get("experiment"):
            return next((a.get("run_id") for a in h["experiment"]["arms"] if a["name"] == arm), None)
        return h.get("run_id")
    if served() == run:                        # promoted before a kill: nothing to do
        return
    ok, said = request_reload(url, run, key, arm=arm)
    if not ok:
        raise RefreshError(f"{url} refused the reload of {run}: {said} (the old run keeps serving)")
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        h = fetch_health(url, api_key=key, timeout=10) or {}
        state = (h.get("reload") if not h.get("experiment") else
                 next((a["reload"] for a in h["experiment"]["arms"] if a["name"] == arm), {})) or {}
        if served() == run:
            log(f"promoted: {url} serves {run}")
            return
        if state.get("state") == "failed" and state.get("target") == run:
            raise RefreshError(f"{url} could not load {run}: {state.get('error')} (the old run keeps serving)")
        time.sleep(0.2)
    raise RefreshError(f"{url} did not serve {run} within {RELOAD_WAIT_S:g} s; rerun the refresh to check again")
