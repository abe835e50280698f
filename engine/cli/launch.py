"""`sessrec train --nproc N`: N local data-parallel workers through torch's elastic launcher (what
`torchrun --standalone --nproc-per-node N -m engine <args>` does), answered for as one command.

The parent checks what it can before starting anything (the config, a batch size the workers can
split, a free run id, which it fixes so that it knows the run), gives each worker its share of the
cores, and returns rank 0's exit status. The launcher forwards SIGTERM/SIGINT to the workers (they
agree to stop, rank 0 writes `last.pt`) and tears them all down when one dies; if the run was left
without a final event then (rank 0 itself was lost), the parent records the failure, so the run
never stays `running`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from engine.cli.output import Output, err_console
from engine.core.argv import to_argv
from engine.core.config import TrainConfig
from engine.core.errors import InputError, SessrecError
from engine.core.locks import RunLock
from engine.core.schema import ErrorKind
from engine.core.threads import THREAD_ENV_VARS, available_cores, process_budget
from engine.core.workspace import Workspace
from engine.runs.events import RunFailed, RunFinished, RunStarted, append_event, read_events
from engine.runs.store import new_run_id
from engine.train.parallel import check_world

# argparse takes any unambiguous prefix of a long option: `--np 2` is `--nproc 2` as long as no other
# train option begins with "--np" (tests/test_distributed.py checks that)
NPROC_FORMS = ("--np", "--npr", "--npro", "--nproc")


def worker_argv(argv: list[str], run_id: str | None = None) -> list[str]:
    """Each worker's command line: the parent's without `--nproc` (in any form argparse accepts),
    with `--run-id` when given."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in NPROC_FORMS:
            skip = True
        elif a.split("=", 1)[0] not in NPROC_FORMS or "=" not in a:
            out.append(a)
    return out + to_argv({"run_id": run_id})


def worker_threads(nproc: int) -> int:
    """Threads of each of `nproc` workers: their share of this job's budget (or of the cores)."""
    total = process_budget().threads or available_cores()
    return max(1, total // nproc)


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _quiet_launcher_logs() -> None:
    """The launcher logs each worker's exit at ERROR level; the parent says it once, in words."""
    if os.environ.get("LOGLEVEL"):
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _describe(failures: dict[int, Any]) -> str:
    parts = []
    for rank, f in sorted(failures.items()):
        code = f.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        parts.append(f"worker {rank} (pid {f.pid}) {how}")
    return "; ".join(parts)


def _final_event(ws: Workspace, run_id: str) -> Any:
    """The run's final event after its last start, or None (still open, or no run)."""
    run = ws.run(run_id)
    if not run.events.exists():
        return None
    final = None
    for ev in read_events(run.events):
        if isinstance(ev, RunStarted):
            final = None
        elif isinstance(ev, (RunFinished, RunFailed)):
            final = ev
    return final


def record_failure(ws: Workspace, run_id: str, error: str) -> bool:
    """Write `run_failed` for a run its workers left open (none of them can any more). False when
    there is nothing to record: no run, it has its final event, or a live process holds its lock."""
    run = ws.run(run_id)
    if not run.exists or not run.events.exists() or _final_event(ws, run_id) is not None:
        return False
    try:
        lock = RunLock(run.lock, run_id).acquire()
    except SessrecError:
        return False
    try:
        append_event(run.events, run_id, RunFailed(error=error, error_kind=ErrorKind.WORKER_LOST.value))
    finally:
        lock.release()
    return True


def launch_train(cfg: TrainConfig | None, ws: Workspace, out: Output, argv: list[str], nproc: int, *,
                 resume: str | None = None, run_id: str | None = None) -> int:
    """Start `nproc` workers running `argv` (the parent's `sessrec` arguments) for the run of `cfg`
    (a new run, `run_id` or a fresh id) or the run `resume`; their exit status."""
    fixed_id = None
    if resume:
        if not ws.run(resume).exists:
            raise InputError(f"run {resume!r} not found in {ws.runs_dir}")
        run_id = resume
    else:
        assert cfg is not None, "a new run needs its config"
        check_world(cfg, nproc)
        existing = ws.run_ids() if ws.runs_dir.exists() else []
        given_id = run_id
        run_id = given_id or new_run_id(cfg.model, existing)
        if ws.run(run_id).root.exists():
            raise InputError(f"run id {run_id!r} is taken ({ws.run(run_id).root}); choose another --run-id, "
                             f"or continue that run with --resume {run_id}")
        fixed_id = None if given_id else run_id

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    _quiet_launcher_logs()
    logs = DefaultLogsSpecs()
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=f"sessrec-{uuid.uuid4().hex[:12]}",
                          max_restarts=0, monitor_interval=0.1, logs_specs=logs)
    threads = {var: str(worker_threads(nproc)) for var in THREAD_ENV_VARS}

    def failed(msg: str, code: int = 1) -> int:
        recorded = record_failure(ws, run_id, msg)
        out.emit({"type": "error", "error": msg, "error_kind": ErrorKind.WORKER_LOST.value, "run_id": run_id})
        err_console.print(f"sessrec: run {run_id} failed: {msg}" + ("" if recorded else " (not recorded)"),
                          markup=False, soft_wrap=True)
        return code

    try:
        with _env(threads):
            elastic_launch(config, sys.executable)("-m", "engine", *worker_argv(argv, fixed_id))
        return 0
    except ChildFailedError as e:
        rank0 = e.failures.get(0)
        if rank0 is not None and rank0.exitcode is not None and rank0.exitcode > 0:
            # rank 0 said why (a refusal, or the run's `run_failed`); a run it left open is closed here
            record_failure(ws, run_id, f"{_describe(e.failures)}; the other workers were stopped")
            return rank0.exitcode
        return failed(f"{_describe(e.failures)}; the other workers were stopped")
    except SignalException as e:
        final = _final_event(ws, run_id)
        if isinstance(final, RunFinished):
            return 0                 # stopped cleanly: `last.pt` written, resumable
        if final is not None or not ws.run(run_id).exists:
            return 1 if final is not None else 130
        return failed(f"stopped by {e.sigval.name} before the workers could save the run")
    finally:
        root = getattr(logs, "root_log_dir", None) or getattr(logs, "_root_log_dir", None)
        if root and os.path.basename(str(root)).startswith("torchelastic_"):
            shutil.rmtree(root, ignore_errors=True)      # the launcher's empty per-run log folder
