"""Jobs: the engine's long work (pipelines, training) run as child processes of the app.

A `Job` is one child process `python -m engine --workspace W --events jsonl ...`. The
`JobManager` starts it (in its own session, so a training run can outlive the app), reads its
stdout line by line (JSON events: progress, stage, result, error, and for training the run events),
tails its stderr from a log file under `<workspace>/logs/`, cancels it (SIGTERM, then SIGKILL after
a timeout) and records each job as `<workspace>/logs/<job-id>.json` so the list of recent jobs
survives a restart of the app.

Nothing here imports Textual: the manager runs on any asyncio loop and reports through plain
callbacks, so it is tested without a UI.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterable

from engine.process import pid_alive

RUNNING = ("starting", "running", "stopping")
FINISHED = ("done", "failed", "cancelled", "stopped", "interrupted")
TAIL_LINES = 400
RUN_EVENT_TYPES = ("run_started", "step", "epoch", "checkpoint", "run_finished", "run_failed")


def engine_command() -> list[str]:
    """How the app starts the engine: the same interpreter, so it works without the console script."""
    return [sys.executable, "-m", "engine"]


# ---- what the app asks the engine to do --------------------------------------------------------
def demo_args(size: str = "small", name: str | None = None, force: bool = False) -> list[str]:
    args = ["demo", "--size", size]
    if name:
        args += ["--name", name]
    if force:
        args.append("--force")
    return args


def import_args(path: str, fmt: str, name: str, test_file: str | None = None) -> list[str]:
    args = ["data", "import", path, "--format", fmt, "--name", name]
    if test_file:
        args += ["--test-file", test_file]
    return args


def build_args(name: str, force: bool | str = False) -> list[str]:
    args = ["data", "build", name]
    if force is True:
        args.append("--force")
    elif force:
        args += ["--force", str(force)]
    return args


def delete_args(name: str) -> list[str]:
    return ["data", "delete", name, "--yes"]


def train_args(dataset: str, model: str, run_id: str, options: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None) -> list[str]:
    """`options`: TrainConfig fields by CLI flag name (epochs, batch-size, loss, device, ...);
    `params`: model hyperparameters, passed as repeatable `--param KEY=VALUE`."""
    args = ["train", "--dataset", dataset, "--model", model, "--run-id", run_id]
    for flag, value in (options or {}).items():
        if value is None or value == "":
            continue
        args += [f"--{flag.replace('_', '-')}", str(value)]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["--param", f"{key}={value}"]
    return args


# ---- a job ---------------------------------------------------------------------------------------
@dataclass
class StageProgress:
    stage: str
    done: float = 0.0
    total: float | None = None
    unit: str = ""
    message: str = ""
    first_time: float | None = None      # event time of the first update (for the rate)
    first_done: float = 0.0
    time: float | None = None            # event time of the latest update

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def eta(self) -> float | None:
        """Seconds left at the rate seen so far (None until two updates)."""
        if not self.total or self.first_time is None or self.time is None:
            return None
        dt = self.time - self.first_time
        dd = self.done - self.first_done
        if dt <= 0 or dd <= 0:
            return None
        return max(0.0, (self.total - self.done) * dt / dd)


@dataclass
class Job:
    id: str
    kind: str                    # demo | import | build | delete | train
    title: str
    argv: list[str]
    log_path: Path
    dataset: str | None = None
    run_id: str | None = None
    status: str = "starting"     # starting | running | stopping | done | failed | cancelled | stopped
    #                              | interrupted | detached
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    returncode: int | None = None
    error: str | None = None
    suggestion: str | None = None
    stages: dict[str, StageProgress] = field(default_factory=dict)
    current_stage: str | None = None
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    result: dict | None = None
    last_run_event: dict | None = None
    cancel_requested: bool = False
    detached: bool = False
    from_history: bool = False
    _stderr_pos: int = 0
    _stderr_partial: str = ""

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    @property
    def finished_ok(self) -> bool:
        return self.status == "done"

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now if now is not None else time.time())
        return max(0.0, end - self.started)

    def overall(self) -> tuple[float | None, float | None]:
        """(fraction done, seconds left) of the whole job, when they can be told."""
        ev = self.last_run_event
        if self.kind == "train" and ev and ev.get("type") == "step":
            spe = ev.get("steps_per_epoch") or 0
            total_epochs = (self.result or {}).get("epochs") or 0
            if spe and total_epochs:
                done = (ev.get("epoch", 1) - 1) * spe + ev.get("epoch_step", 0)
                return min(1.0, done / (spe * total_epochs)), ev.get("eta_s")
            return None, ev.get("eta_s")
        pipe = self.stages.get("pipeline")
        cur = self.stages.get(self.current_stage or "")
        if pipe is not None and pipe.total:
            frac = pipe.done / pipe.total
            if cur is not None and cur.stage != "pipeline" and cur.fraction is not None:
                frac += cur.fraction / pipe.total
            return min(1.0, frac), cur.eta() if cur is not None else None
        if cur is not None:
            return cur.fraction, cur.eta()
        return None, None

    def record(self) -> dict:
        return {"id": self.id, "kind": self.kind, "title": self.title, "argv": self.argv,
                "log": str(self.log_path), "dataset": self.dataset, "run_id": self.run_id,
                "status": self.status, "pid": self.pid, "started": self.started, "finished": self.finished,
                "returncode": self.returncode, "error": self.error, "suggestion": self.suggestion,
                "detached": self.detached}

    @classmethod
    def from_record(cls, rec: dict) -> "Job":
        job = cls(id=rec["id"], kind=rec.get("kind", "?"), title=rec.get("title", rec["id"]),
                  argv=list(rec.get("argv") or []), log_path=Path(rec.get("log") or ""),
                  dataset=rec.get("dataset"), run_id=rec.get("run_id"), status=rec.get("status", "interrupted"),
                  pid=rec.get("pid"), started=rec.get("started"), finished=rec.get("finished"),
                  returncode=rec.get("returncode"), error=rec.get("error"), suggestion=rec.get("suggestion"),
                  detached=bool(rec.get("detached")), from_history=True)
        return job


# ---- process helpers -----------------------------------------------------------------------------
def pid_is_engine(pid: int | None) -> bool:
    """The process is alive and (where /proc tells) still an engine process, not a reused pid."""
    if not pid_alive(pid):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True            # no /proc: trust the pid
    return b"engine" in cmd or b"sessrec" in cmd or b"fake_child" in cmd


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {rc}"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def _pump_lines(proc: subprocess.Popen, loop: asyncio.AbstractEventLoop, out: asyncio.Queue) -> None:
    """Thread body: put each stdout line of `proc` on `out` (then None at EOF). If the loop is gone
    (the app quit and left the child detached), close the pipe: the child's next write fails and the
    engine carries on without stdout (it writes its events file anyway)."""
    pipe = proc.stdout
    assert pipe is not None
    try:
        for raw in iter(pipe.readline, b""):
            try:
                loop.call_soon_threadsafe(out.put_nowait, raw)
            except RuntimeError:           # event loop closed
                break
    except (OSError, ValueError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(out.put_nowait, None)
        except RuntimeError:
            pass


Spawner = Callable[[Coroutine[Any, Any, None], str], Any]
Listener = Callable[["Job"], None]
EventListener = Callable[["Job", dict], None]


class JobManager:
    """Start, track, cancel and remember the engine's child processes.

    `engine_cmd`: the argv prefix of the engine (tests pass a fake child script); `spawn(coro, name)`
    runs a job's coroutine (the app passes its worker runner; default `asyncio.create_task`).
    `on_change(job)` is called after every update, `on_event(job, event)` for each JSON line.
    """

    def __init__(self, workspace: Path, engine_cmd: list[str] | None = None,
                 spawn: Spawner | None = None, on_change: Listener | None = None,
                 on_event: EventListener | None = None, kill_after: float = 10.0,
                 kill_after_train: float | None = None, env: dict[str, str] | None = None) -> None:
        self.workspace = Path(workspace)
        self.engine_cmd = list(engine_cmd or engine_command())
        self.spawn = spawn or (lambda coro, name: asyncio.get_running_loop().create_task(coro, name=name))
        self.on_change = on_change or (lambda job: None)
        self.on_event = on_event or (lambda job, ev: None)
        self.kill_after = kill_after
        # a training run stops at its next step but finishes a validation pass first: give it longer
        self.kill_after_train = kill_after if kill_after_train is None else kill_after_train
        self.env = env
        self.jobs: dict[str, Job] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._counter = 0

    @property
    def logs_dir(self) -> Path:
        return self.workspace / "logs"

    # ---- queries ---------------------------------------------------------------------------------
    def ordered(self) -> list[Job]:
        """Running jobs first, then the most recent."""
        return sorted(self.jobs.values(), key=lambda j: (not j.running, -(j.started or 0)))

    def running(self, kind: str | None = None) -> list[Job]:
        return [j for j in self.jobs.values() if j.running and (kind is None or j.kind == kind)]

    def busy_datasets(self) -> set[str]:
        return {j.dataset for j in self.running() if j.dataset and j.kind != "train"}

    def job_for_run(self, run_id: str) -> Job | None:
        for j in self.jobs.values():
            if j.run_id == run_id and j.kind == "train":
                return j
        return None

    # ---- history ---------------------------------------------------------------------------------
    def load_history(self, limit: int = 50) -> None:
        """Jobs of earlier sessions from their records (their stderr tails from the log files)."""
        if not self.logs_dir.is_dir():
            return
        recs = []
        for p in self.logs_dir.glob("*.json"):
            try:
                recs.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        recs.sort(key=lambda r: r.get("started") or 0, reverse=True)
        for rec in recs[:limit]:
            if not rec.get("id") or rec["id"] in self.jobs:
                continue
            job = Job.from_record(rec)
            if not job.log_path.is_file():        # the workspace was moved: the log sits next to the record
                job.log_path = self.logs_dir / f"{job.id}.log"
            if job.status in RUNNING or job.status == "detached":
                job.status = "detached" if pid_is_engine(job.pid) else "interrupted"
                if job.status == "detached":
                    job.detached = True
            self.read_stderr(job)
            self.jobs[job.id] = job

    def _save(self, job: Job) -> None:
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.logs_dir / f"{job.id}.json", job.record())
        except OSError:
            pass

    def new_id(self, kind: str, label: str = "") -> str:
        self._counter += 1
        base = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}" + (f"-{label}" if label else "")
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:60]
        jid, n = base, 1
        while jid in self.jobs or (self.logs_dir / f"{jid}.json").exists():
            n += 1
            jid = f"{base}-{n}"
        return jid

    # ---- start -----------------------------------------------------------------------------------
    def start(self, kind: str, args: list[str], title: str, dataset: str | None = None,
              run_id: str | None = None, job_id: str | None = None) -> Job:
        """Start `engine --workspace W --events jsonl ARGS` as a job; returns at once."""
        jid = job_id or self.new_id(kind, run_id or dataset or "")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.engine_cmd, "--workspace", str(self.workspace), "--events", "jsonl", *args]
        job = Job(id=jid, kind=kind, title=title, argv=argv, log_path=self.logs_dir / f"{jid}.log",
                  dataset=dataset, run_id=run_id, started=time.time())
        self.jobs[jid] = job
        self.spawn(self._run(job), f"job-{jid}")
        self.on_change(job)
        return job

    def _popen(self, job: Job) -> subprocess.Popen:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["COLUMNS"] = env.get("SESSREC_LOG_COLUMNS", "120")
        with open(job.log_path, "ab") as log:
            return subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True, env=env, close_fds=True)

    async def _run(self, job: Job) -> None:
        try:
            proc = self._popen(job)
        except OSError as e:
            job.status, job.error, job.finished = "failed", f"could not start the engine: {e}", time.time()
            self._save(job)
            self.on_change(job)
            return
        self._procs[job.id] = proc
        job.pid, job.status = proc.pid, "running"
        self._save(job)
        self.on_change(job)
        # stdout is read by a thread that owns the pipe (plain blocking reads; no asyncio pipe
        # transport, whose clean-up is tied to the event loop that created it)
        lines: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=_pump_lines, args=(proc, asyncio.get_running_loop(), lines),
                         name=f"job-{job.id}-stdout", daemon=True).start()
        tail = asyncio.ensure_future(self._tail_loop(job))
        try:
            while True:
                raw = await lines.get()
                if raw is None:
                    break
                self.handle_line(job, raw.decode("utf-8", "replace"))
            while proc.poll() is None:
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            # the app is going away: leave the child running (it is in its own session); the
            # reader thread closes the pipe when it finds the loop gone
            if job.running:
                job.status, job.detached = "detached", True
                self._save(job)
            raise
        finally:
            tail.cancel()
        self.read_stderr(job)
        self._finish(job, proc.returncode)

    async def _tail_loop(self, job: Job) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self.read_stderr(job):
                self.on_change(job)

    def read_stderr(self, job: Job) -> bool:
        """Append new complete stderr lines from the job's log file to its tail; True if any."""
        try:
            with open(job.log_path, "rb") as f:
                f.seek(job._stderr_pos)
                data = f.read(1 << 20)
        except OSError:
            return False
        if not data:
            return False
        job._stderr_pos += len(data)
        text = job._stderr_partial + data.decode("utf-8", "replace")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        job._stderr_partial = lines.pop()
        job.stderr_tail.extend(lines)
        return bool(lines)

    # ---- events ----------------------------------------------------------------------------------
    def handle_line(self, job: Job, line: str) -> dict | None:
        line = line.strip()
        if not line:
            return None
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            job.stderr_tail.append(line)     # stray print on stdout: show it with the log
            self.on_change(job)
            return None
        if not isinstance(ev, dict):
            return None
        t = ev.get("type")
        if t == "progress":
            st = job.stages.get(ev.get("stage", "?"))
            if st is None:
                st = job.stages[ev.get("stage", "?")] = StageProgress(ev.get("stage", "?"))
                st.first_time, st.first_done = ev.get("time"), ev.get("done") or 0.0
            st.done, st.total, st.unit = ev.get("done") or 0.0, ev.get("total"), ev.get("unit", "")
            st.message, st.time = ev.get("message", ""), ev.get("time")
            if st.stage != "pipeline":
                job.current_stage = st.stage
            elif job.current_stage is None:
                job.current_stage = "pipeline"
        elif t == "error":
            job.error = ev.get("error")
        elif t == "result":
            job.result = {**(job.result or {}), **ev}
        elif t in RUN_EVENT_TYPES:
            job.last_run_event = ev
            if t == "run_started":
                job.run_id = ev.get("run_id", job.run_id)
                job.result = {**(job.result or {}), "epochs": ev.get("epochs"),
                              "steps_per_epoch": ev.get("steps_per_epoch")}
            elif t == "run_failed":
                job.error = ev.get("error")
                job.suggestion = ev.get("suggestion") or None
        self.on_event(job, ev)
        self.on_change(job)
        return ev

    def _finish(self, job: Job, rc: int | None) -> None:
        self._procs.pop(job.id, None)
        job.returncode, job.finished = rc, time.time()
        last = job.last_run_event or {}
        if job.kind == "train" and last.get("type") == "run_finished":
            job.status = "stopped" if last.get("status") == "stopped" else "done"
        elif job.kind == "train" and last.get("type") == "run_failed":
            job.status = "cancelled" if job.cancel_requested and last.get("error_kind") == "interrupted" \
                else "failed"
        elif rc == 0:
            job.status = "done"
        elif job.cancel_requested:
            job.status = "cancelled"
        else:
            job.status = "failed"
        if job.status == "failed" and not job.error:
            tail = [ln for ln in job.stderr_tail if ln.strip()]
            last_line = tail[-1].strip() if tail else ""
            job.error = f"the engine stopped: {describe_exit(rc)}" + (f": {last_line}" if last_line else "")
        self._save(job)
        self.on_change(job)

    # ---- cancel / detach -------------------------------------------------------------------------
    def grace(self, job: Job) -> float:
        """Seconds between SIGTERM and SIGKILL for this job."""
        return self.kill_after_train if job.kind == "train" else self.kill_after

    def kill_now(self, job: Job) -> bool:
        """SIGKILL the job's process group at once (a second cancel of a job that is stopping)."""
        if not job.pid or not (job.running or job.status == "detached") or not pid_alive(job.pid):
            return False
        job.cancel_requested = True
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                return False
        return True

    def cancel(self, job: Job) -> bool:
        """SIGTERM now (the engine stops cleanly), SIGKILL to its process group after `grace(job)`."""
        pid = job.pid
        if job.status == "detached":
            if not pid_is_engine(pid):
                job.status = "interrupted"
                self._save(job)
                self.on_change(job)
                return False
        elif not job.running:
            return False
        job.cancel_requested = True
        job.status = "stopping"
        try:
            if pid:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self._save(job)
        self.on_change(job)
        asyncio.ensure_future(self._escalate(job))
        return True

    async def _escalate(self, job: Job) -> None:
        deadline = time.monotonic() + self.grace(job)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            proc = self._procs.get(job.id)
            alive = proc.poll() is None if proc is not None else pid_alive(job.pid) and job.status == "stopping"
            if not alive:
                if proc is None and job.status == "stopping":   # a detached job: nobody reaps it for us
                    job.status, job.finished = "cancelled", time.time()
                    self._save(job)
                    self.on_change(job)
                return
        try:
            if job.pid:
                os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(job.pid or 0, signal.SIGKILL) if job.pid else None
            except ProcessLookupError:
                pass
        if job.id not in self._procs and job.status == "stopping":
            job.status, job.finished = "cancelled", time.time()
            self._save(job)
            self.on_change(job)

    def detach_all(self) -> list[Job]:
        """Mark running jobs as detached (the app quits and leaves them running)."""
        out = []
        for job in self.running():
            job.status, job.detached = "detached", True
            self._save(job)
            out.append(job)
        return out

    def cancel_all(self) -> list[Job]:
        return [j for j in list(self.jobs.values()) if (j.running or j.status == "detached") and self.cancel(j)]

    async def wait(self, job: Job, timeout: float = 60.0) -> Job:
        """Until the job has finished (tests and scripts)."""
        deadline = time.monotonic() + timeout
        while job.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return job

    def forget_finished(self) -> int:
        """Drop finished jobs from the list and their records (their .log files stay)."""
        gone = [jid for jid, j in self.jobs.items() if not j.running and j.status != "detached"]
        for jid in gone:
            del self.jobs[jid]
            try:
                (self.logs_dir / f"{jid}.json").unlink(missing_ok=True)
            except OSError:
                pass
        return len(gone)


async def run_to_end(manager: JobManager, kind: str, args: Iterable[str], title: str = "",
                     timeout: float = 120.0, **kw: Any) -> Job:
    job = manager.start(kind, list(args), title or kind, **kw)
    return await manager.wait(job, timeout)
