"""A stand-in for `python -m engine --workspace W --events jsonl COMMAND ...` in the app's tests.

It speaks the engine's protocol (JSON lines on stdout, logs on stderr; a training run also writes
runs/<id>/config.json and events.jsonl) with small sleeps, so tests see progress arrive over time.
The scenario comes from $FAKE_CHILD (default ok):

  ok           pipeline: progress per stage + result; train: 2 epochs x 8 steps, run_finished
  slow         like ok but long (for cancel / quit-while-running tests); honours SIGTERM
  crash        train: a few steps, a traceback on stderr, exit 1 (no run_failed)
  cuda_error   train: run_failed error_kind cuda_error
  oom          train: run_failed error_kind cuda_oom with a suggestion, exit 3
  killed       train: SIGKILL to itself after a few steps (like the kernel's OOM killer)
  ignore_term  train: ignores SIGTERM (the app must kill it)
  fail         pipeline: {"type":"error"} and exit 2; serve: {"type":"error"} and exit 2

`serve TARGET --host H --port P` answers nothing itself (the test runs the HTTP server): it prints
the `serving` line for http://H:P (api_key_required: whether $SESSREC_API_KEY was given) and waits
for SIGTERM, then exits 0.

$FAKE_CHILD_DELAY: seconds between steps (default 0.02).

Every command first reports what the app gave it, as {"type": "env", "omp": $OMP_NUM_THREADS,
"cuda": $CUDA_VISIBLE_DEVICES, "budget": <its budget file's value>, ...}, and again at each step
where its budget file holds a new value (how the engine's ThreadBudget.poll() sees a new share).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

SCENARIO = os.environ.get("FAKE_CHILD", "ok")
DELAY = float(os.environ.get("FAKE_CHILD_DELAY", "0.02"))
STOP = {"requested": False}
RUN_LOCK: list = []


def out(obj: dict) -> None:
    obj.setdefault("time", round(time.time(), 3))
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def opt(argv: list[str], name: str, default: str | None = None) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


def on_term(signum: int, frame: object) -> None:
    STOP["requested"] = True


def read_budget() -> str | None:
    path = os.environ.get("SESSREC_THREADS_FILE")
    try:
        return Path(path).read_text().strip() if path else None
    except OSError:
        return None


SEEN = {"budget": None}


def report_env(force: bool = False) -> None:
    """The environment and budget this child got (again only when the budget file changed)."""
    budget = read_budget()
    if force or budget != SEEN["budget"]:
        SEEN["budget"] = budget
        out({"type": "env", "pid": os.getpid(), "omp": os.environ.get("OMP_NUM_THREADS"),
             "mkl": os.environ.get("MKL_NUM_THREADS"), "openblas": os.environ.get("OPENBLAS_NUM_THREADS"),
             "wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
             "budget_file": os.environ.get("SESSREC_THREADS_FILE"), "budget": budget})


def pipeline(ws: Path, argv: list[str]) -> int:
    name = opt(argv, "--name") or (argv[2] if len(argv) > 2 and argv[0] == "data" else "demo")
    if argv[0] == "demo":
        size = opt(argv, "--size", "small")
        name = opt(argv, "--name") or ("demo" if size == "small" else f"demo-{size}")
    if SCENARIO == "fail":
        log("sessrec: error: something is wrong with the input")
        out({"type": "error", "error": f"dataset {name!r}: the source file has no valid rows"})
        return 2
    stages = ["ingest", "sessionize", "split", "items", "graph", "encodings"]
    steps = 200 if SCENARIO == "slow" else 4
    for i, st in enumerate(stages):
        out({"type": "progress", "stage": "pipeline", "done": i, "total": len(stages), "unit": "stages",
             "message": f"{st}: running"})
        log(f"{st}: running")
        for k in range(1, steps + 1):
            if STOP["requested"]:
                log("sessrec: interrupted")
                out({"type": "error", "error": "interrupted"})
                return 130
            out({"type": "progress", "stage": st, "done": k, "total": steps, "unit": "steps",
                 "message": f"step {k}"})
            report_env()
            time.sleep(DELAY)
        out({"type": "progress", "stage": "pipeline", "done": i + 1, "total": len(stages), "unit": "stages",
             "message": f"{st}: done"})
    for st in stages:
        out({"type": "stage", "dataset": name, "stage": st, "ran": True, "seconds": 0.1})
    out({"type": "result", "dataset": name, "stages": {s: {"state": "done"} for s in stages}, "summary": {}})
    log(f"dataset {name}: built")
    return 0


def train(ws: Path, argv: list[str]) -> int:
    run_id = opt(argv, "--run-id") or "fake-run"
    model = opt(argv, "--model", "graph_transformer")
    dataset = opt(argv, "--dataset", "demo")
    epochs = int(opt(argv, "--epochs", "2") or 2)
    if SCENARIO == "slow":
        epochs = max(epochs, 50)
    spe = 8 if SCENARIO != "slow" else 40
    from engine.core.locks import RunLock
    from engine.core.workspace import Workspace
    run = Workspace(ws.resolve()).run(run_id)
    run_dir = run.root
    run_dir.mkdir(parents=True, exist_ok=True)
    # like the engine: the run's lock is held from before its config until the process ends
    RUN_LOCK.append(RunLock(run.lock, run_id).acquire())
    run.config.write_text(json.dumps({
        "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kind": "gnn",
        "train": {"dataset": dataset, "model": model, "epochs": epochs, "batch_size": 512, "model_params": {}},
        "argv": argv}))
    events = open(run.events, "a", buffering=1)

    def emit(type_: str, **fields) -> dict:
        # like the engine: run events go to the run's events file only
        obj = {"type": type_, "time": round(time.time(), 3), "run_id": run_id, **fields}
        events.write(json.dumps(obj) + "\n")
        return obj

    def fail(ev: dict) -> None:
        out({"type": "error", "error": ev["error"], "error_kind": ev["error_kind"],
             "suggestion": ev.get("suggestion") or None})

    emit("run_started", config={"model": model, "dataset": dataset, "epochs": epochs}, dataset=dataset,
         model=model, device="cpu", device_info={"cuda_available": False}, n_params=1234, pid=os.getpid(),
         train_examples=spe * 512, steps_per_epoch=spe, epochs=epochs, resumed_from=None)
    log(f"{model} on {dataset}: {spe} steps/epoch, device cpu")
    step, best, best_epoch = 0, -1.0, 0
    for epoch in range(1, epochs + 1):
        for k in range(1, spe + 1):
            step += 1
            report_env()
            time.sleep(DELAY)
            emit("step", epoch=epoch, step=step, epoch_step=k, steps_per_epoch=spe,
                 loss=round(5.0 / (1 + 0.1 * step), 5), lr=0.001, examples_per_s=5000.0,
                 eta_s=round((epochs * spe - step) * DELAY, 2), gpu_mem_mb=None)
            if step == 3 and SCENARIO == "crash":
                log("Traceback (most recent call last):\n  File \"loop.py\", line 1\nRuntimeError: boom in step 3")
                return 1
            if step == 3 and SCENARIO == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            if step == 3 and SCENARIO == "cuda_error":
                fail(emit("run_failed", error="RuntimeError: CUDA error: an illegal memory access was encountered",
                          error_kind="cuda_error", batch_size=512, suggestion="", traceback="Traceback ..."))
                log("sessrec: run failed: CUDA error")
                return 1
            if step == 3 and SCENARIO == "oom":
                fail(emit("run_failed", error="CUDA out of memory at batch size 512: tried to allocate 2.00 GiB",
                          error_kind="cuda_oom", batch_size=512,
                          suggestion="retry with --batch-size 256 or --loss sampled (no [batch x items] logits)",
                          traceback="Traceback ..."))
                log("sessrec: run failed: CUDA out of memory")
                return 3
            if STOP["requested"]:
                emit("checkpoint", kind="last", path=run.last.name, epoch=epoch, step=step)
                run.last.write_bytes(b"fake")
                log(f"stopped (SIGTERM) at epoch {epoch}, step {step}")
                out({"type": "result", "run": emit("run_finished", status="stopped", reason="SIGTERM",
                                                   best_epoch=best_epoch or None, best_val=None, seconds=1.0,
                                                   epochs_run=epoch - 1)})
                return 0
        r10 = round(0.1 + 0.05 * epoch - 0.004 * epoch * epoch + (0.03 if model == "graphsage" else 0.0), 4)
        improved = r10 > best
        if improved:
            best, best_epoch = r10, epoch
        emit("epoch", epoch=epoch, train_loss=round(5.0 / (1 + 0.1 * step), 5), epoch_seconds=spe * DELAY,
             val={"protocol": "prefixes", "metrics": {"recall@10": r10, "ndcg@10": round(r10 * 0.6, 4)}},
             best_epoch=best_epoch, best_value=best, improved=improved, patience_left=3)
        if improved:
            run.best.write_bytes(b"fake")
            emit("checkpoint", kind="best", path=run.best.name, epoch=epoch, step=step)
        log(f"epoch {epoch}/{epochs}: val recall@10 {r10}")
    test = {p: {"metrics": {"recall@10": round(best * 0.9, 4), "ndcg@10": round(best * 0.5, 4)}}
            for p in ("last", "prefixes")}
    out({"type": "result", "run": emit("run_finished", status="completed", best_epoch=best_epoch,
                                       best_val={"recall@10": best, "ndcg@10": round(best * 0.6, 4)},
                                       val=test, test=test, seconds=round(epochs * spe * DELAY, 2),
                                       epochs_run=epochs)})
    return 0


def serve(argv: list[str]) -> int:
    host, port = opt(argv, "--host", "127.0.0.1"), int(opt(argv, "--port", "8000") or 8000)
    target = argv[1] if len(argv) > 1 else "?"
    if SCENARIO == "fail":
        out({"type": "error", "error": f"port {port} on {host} is in use"})
        return 2
    baseline = target.startswith("baseline:")
    out({"type": "serving", "url": f"http://{host}:{port}", "host": host, "port": port,
         "model": target.split(":", 1)[1].split("@")[0] if baseline else "graph_transformer",
         "run_id": None if baseline else target, "dataset": "demo-tiny", "runtime": opt(argv, "--runtime", "torch"),
         "api_key_required": bool(os.environ.get("SESSREC_API_KEY"))})
    log(f"serving {target} on http://{host}:{port}")
    while not STOP["requested"]:
        time.sleep(0.02)
    log("stopped (SIGTERM)")
    return 0


def main() -> int:
    argv = sys.argv[1:]
    ws = Path(opt(argv, "--workspace", "workspace") or "workspace")
    i = argv.index("jsonl") + 1 if "jsonl" in argv else 0
    cmd = argv[i:]
    if SCENARIO == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    if not cmd:
        log("fake_child: no command")
        return 2
    report_env(force=True)
    if cmd[0] == "train":
        return train(ws, cmd)
    if cmd[0] == "serve":
        return serve(cmd)
    if cmd[0] in ("demo", "data"):
        return pipeline(ws, cmd)
    log(f"fake_child: unknown command {cmd[0]}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
