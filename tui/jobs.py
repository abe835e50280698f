"""Jobs: the engine's long work (pipelines, training) run as child processes of the app.

A `Job` is one child process `python -m engine --workspace W --events jsonl ...`. The
`JobManager` starts it (in its own session, so a training run can outlive the app), reads its
stdout line by line (JSON lines: progress, stage, result, error; a training's run events are in
its run folder, read by the engine's run store),
tails its stderr from a log file under `<workspace>/logs/`, cancels it (SIGTERM, then SIGKILL after
a timeout) and records each job as `<workspace>/logs/<job-id>.json` so the list of recent jobs
survives a restart of the app.

Jobs share the machine (see `engine.core.threads`): every running job but the light ones (delete, serve) gets
its share of the cores, passed at start in the environment and rewritten into its budget file when
a job starts or ends (a GPU training counts too: it builds batches and runs Python on the CPU).
`JobSettings.policy` `share` runs CPU jobs together, `queue` runs one at a time (later ones wait as
`queued`). A training whose device is not `cpu`, on a machine with GPUs, is a GPU job: it gets a GPU
of its own through CUDA_VISIBLE_DEVICES and waits when all are taken, unless `share_gpus` is on.

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

from engine.core.atomic import write_json
from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.process import process_alive
from engine.core.schema import Device, JobKind, JobPolicy, JobStatus, values
from engine.core.threads import available_cores, budget_env, thread_shares, write_budget
from engine.core.workspace import Workspace

RUNNING = (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.STOPPING)      # a child process exists
ACTIVE = tuple(s for s in JobStatus if s.active)                            # RUNNING and QUEUED
FINISHED = tuple(s for s in JobStatus if s.finished)
# never queued, one thread, not in the shares: quick file work, and servers. A server runs until it
# is stopped and is idle between requests: counted as a CPU job it would hold the `queue` policy's
# slot for ever and take a share of the cores from trainings; one thread answers one session's
# request in milliseconds (the Recommend screen scores the same way).
LIGHT_KINDS = (JobKind.DELETE, JobKind.SERVE)
TAIL_LINES = 400


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


def serve_args(target: str, host: str = "127.0.0.1", port: int = 8000, runtime: str = "torch",
               workers: int | None = None, insecure: bool = False, search: str | None = None) -> list[str]:
    """`sessrec serve TARGET` (a run id or baseline:NAME@DATASET). The API key is never an argument
    (argv is visible in `ps`): it goes in the job's environment as SESSREC_API_KEY."""
    args = ["serve", target, "--host", host, "--port", str(port), "--runtime", runtime]
    if search and search != "auto":           # auto: the server's default
        args += ["--search", search]
    if workers:
        args += ["--workers", str(workers)]
    if insecure:
        args.append("--insecure")
    return args


def train_device(argv: list[str]) -> str:
    """The `--device` a training's argv asks for (the last one wins, as in argparse)."""
    device = str(TrainConfig.device)
    for flag, value in zip(argv, argv[1:]):
        if flag == "--device":
            device = value
    return device


def train_workers(argv: list[str]) -> int:
    """The `--nproc` (data-parallel workers) a training's argv asks for (1 when absent)."""
    n = 1
    for flag, value in zip(argv, argv[1:]):
        if flag == "--nproc":
            n = int(value)
    return n


def train_args(dataset: str, model: str, run_id: str, options: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None, workers: int = 1) -> list[str]:
    """`options` (TrainConfig fields) and `params` (model hyperparameters) by field name, each as
    the flag the CLI generates from that field (`batch_size` -> `--batch-size`; booleans as
    `--name` / `--no-name`); `workers` > 1: data-parallel workers (`--nproc`)."""
    return ["train", "--dataset", dataset, "--model", model, "--run-id", run_id,
            *config_flags({**(options or {}), **(params or {})}),
            *(["--nproc", str(workers)] if workers > 1 else [])]


def config_flags(values: dict[str, Any]) -> list[str]:
    """Config fields by name as the flags the CLI generates from them (`batch_size` -> `--batch-size`;
    booleans as `--name` / `--no-name`)."""
    args: list[str] = []
    for name, value in values.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        elif value is not None and value != "":
            args += [f"--{flag}", str(getattr(value, "value", value))]
    return args


def tune_args(dataset: str, model: str, study: str, trials: int, metric: str, protocol: str,
              options: dict[str, Any] | None = None) -> list[str]:
    """`sessrec tune`: `options` are TrainConfig fields (fixed for every trial), as for training."""
    args = ["tune", "--dataset", dataset, "--model", model, "--study", study, "--trials", str(trials),
            "--metric", metric, "--protocol", protocol]
    return args + config_flags(options or {})


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


def _vocab(vocab: type, value: Any, default: Any) -> Any:
    """`value` as a member of `vocab` (records written by other versions may hold anything)."""
    try:
        return vocab(value)
    except ValueError:
        return default


@dataclass
class Job:
    id: str
    kind: str                    # a JobKind
    title: str
    argv: list[str]
    log_path: Path
    dataset: str | None = None
    run_id: str | None = None
    status: str = JobStatus.QUEUED   # a JobStatus
    pid: int | None = None
    created: float | None = None     # when it was asked for (a queued job has not started yet)
    started: float | None = None     # when its process was started
    finished: float | None = None
    returncode: int | None = None
    error: str | None = None
    suggestion: str | None = None
    stages: dict[str, StageProgress] = field(default_factory=dict)
    current_stage: str | None = None
    result: dict | None = None
    cancel_requested: bool = False
    detached: bool = False
    from_history: bool = False
    threads: int | None = None       # its share of the cores now (None: no budget given)
    gpus: list[int] = field(default_factory=list)   # the GPUs it was given (indices among the app's)
    want_gpus: list[int] | None = None               # the GPUs the user asked for (None: any free)
    waiting_for: str | None = None   # what a queued job waits for
    serving: dict | None = None      # a server's "serving" line (its address, model, run)
    # extra environment of its process (a server's API key): never written to the job record
    env: dict[str, str] = field(default_factory=dict, repr=False)
    _tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES), repr=False)
    _log_pos: int = field(default=0, repr=False)
    _log_partial: str = field(default="", repr=False)
    _log_version: int = field(default=0, repr=False)

    @property
    def running(self) -> bool:
        """Its process exists (starting, running or stopping)."""
        return self.status in RUNNING

    @property
    def active(self) -> bool:
        """Running, or queued to run."""
        return self.status in ACTIVE

    @property
    def log_version(self) -> int:
        """Goes up each time lines are added to `log_lines` (compare it to redraw a log only then)."""
        return self._log_version

    @property
    def log_lines(self) -> list[str]:
        """The last TAIL_LINES lines of the job's log (its stderr, and stray stdout lines)."""
        return list(self._tail)

    def _append_log(self, lines: list[str]) -> None:
        if lines:
            self._tail.extend(lines)
            self._log_version += 1

    def read_log(self) -> bool:
        """Append new complete lines of the log file to the tail; True if any."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_pos)
                data = f.read(1 << 20)
        except OSError:
            return False
        if not data:
            return False
        self._log_pos += len(data)
        text = self._log_partial + data.decode("utf-8", "replace")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._log_partial = lines.pop()
        self._append_log(lines)
        return bool(lines)

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now if now is not None else time.time())
        return max(0.0, end - self.started)

    def overall(self) -> tuple[float | None, float | None]:
        """(fraction done, seconds left) of a pipeline job from its progress lines (a training
        job's progress is its run's: see the controller)."""
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
                "status": self.status, "pid": self.pid, "created": self.created, "started": self.started,
                "finished": self.finished, "returncode": self.returncode, "error": self.error,
                "suggestion": self.suggestion, "detached": self.detached, "gpus": self.gpus}

    @classmethod
    def from_record(cls, rec: dict) -> "Job":
        job = cls(id=rec["id"], kind=_vocab(JobKind, rec.get("kind"), rec.get("kind", "?")),
                  title=rec.get("title", rec["id"]), argv=list(rec.get("argv") or []),
                  log_path=Path(rec.get("log") or ""), dataset=rec.get("dataset"), run_id=rec.get("run_id"),
                  status=_vocab(JobStatus, rec.get("status"), JobStatus.INTERRUPTED), pid=rec.get("pid"),
                  created=rec.get("created", rec.get("started")), started=rec.get("started"),
                  finished=rec.get("finished"), returncode=rec.get("returncode"), error=rec.get("error"),
                  suggestion=rec.get("suggestion"), detached=bool(rec.get("detached")),
                  gpus=list(rec.get("gpus") or ([] if rec.get("gpu") is None else [rec["gpu"]])),
                  from_history=True)
        return job


# ---- how jobs share the machine ------------------------------------------------------------------
@dataclass(frozen=True)
class JobSettings:
    """The user's choice, kept in the workspace's settings file."""

    policy: JobPolicy = JobPolicy.SHARE
    share_gpus: bool = False         # GPU jobs may share a GPU when there are more jobs than GPUs

    @classmethod
    def load(cls, path: Path) -> "JobSettings":
        """The settings in `path` (defaults when there is none); InputError when it is unusable."""
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"settings file {path}: cannot be read ({e}); fix or delete it") from None
        if not isinstance(data, dict):
            raise InputError(f"settings file {path}: expected a JSON object; fix or delete it")
        policy = data.get("job_policy", JobPolicy.SHARE.value)
        if policy not in values(JobPolicy):
            raise InputError(f"settings file {path}: job_policy {policy!r}: expected one of "
                             f"{', '.join(values(JobPolicy))}")
        return cls(JobPolicy(policy), bool(data.get("share_gpus", False)))

    def save(self, path: Path) -> None:
        """Write them into `path`, keeping any other settings the file holds."""
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        data.update(job_policy=self.policy.value, share_gpus=self.share_gpus)
        write_json(path, data)


# ---- process helpers -----------------------------------------------------------------------------
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
    """Start, track, cancel and remember the engine's child processes, and share the machine
    between them.

    `engine_cmd`: the argv prefix of the engine (tests pass a fake child script); `spawn(coro, name)`
    runs a job's coroutine (the app passes its worker runner; default `asyncio.create_task`).
    `on_change(job)` is called after every update, `on_event(job, event)` for each JSON line.
    `cores`: the cores to share (default: this process's CPU affinity); `gpus`: how many GPUs the
    app found (0: every job is a CPU job; settable later, when device detection is done);
    `thread_budgets=False` leaves each child all the cores (the behaviour before budgets);
    `settings`: default read from the workspace's settings file (`settings_error` says why not).
    """

    def __init__(self, workspace: Path, engine_cmd: list[str] | None = None,
                 spawn: Spawner | None = None, on_change: Listener | None = None,
                 on_event: EventListener | None = None, kill_after: float = 10.0,
                 kill_after_train: float | None = None, env: dict[str, str] | None = None, *,
                 cores: int | None = None, gpus: int = 0, thread_budgets: bool = True,
                 settings: JobSettings | None = None) -> None:
        self.ws = Workspace(Path(workspace))
        self.workspace = self.ws.root
        self.engine_cmd = list(engine_cmd or engine_command())
        self.spawn = spawn or (lambda coro, name: asyncio.get_running_loop().create_task(coro, name=name))
        self.on_change = on_change or (lambda job: None)
        self.on_event = on_event or (lambda job, ev: None)
        self.kill_after = kill_after
        # a training run stops at its next step but finishes a validation pass first: give it longer
        self.kill_after_train = kill_after if kill_after_train is None else kill_after_train
        self.env = env
        self.cores = cores or available_cores()
        self._gpus = max(0, gpus)
        self.thread_budgets = thread_budgets
        self.settings_error: str | None = None
        if settings is None:
            try:
                settings = JobSettings.load(self.ws.settings)
            except InputError as e:       # the app still opens, with the defaults, and says why
                settings, self.settings_error = JobSettings(), str(e)
        self.settings = settings
        self.jobs: dict[str, Job] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._counter = 0

    @property
    def logs_dir(self) -> Path:
        return self.ws.logs_dir

    @property
    def gpus(self) -> int:
        return self._gpus

    @gpus.setter
    def gpus(self, n: int) -> None:
        """The app learns the GPU count after start-up (device detection imports torch)."""
        self._gpus = max(0, n)
        self._schedule()

    def set_settings(self, settings: JobSettings) -> None:
        """Use `settings` from now on (queued jobs that may now start, start) and save them in the
        workspace; raises OSError when they cannot be saved (they apply anyway)."""
        self.settings, self.settings_error = settings, None
        self._schedule()
        settings.save(self.ws.settings)

    # ---- queries ---------------------------------------------------------------------------------
    def ordered(self) -> list[Job]:
        """Running and queued jobs first, then the most recent."""
        return sorted(self.jobs.values(), key=lambda j: (not j.active, -(j.started or j.created or 0)))

    def running(self, kind: str | None = None) -> list[Job]:
        """Jobs whose process exists."""
        return [j for j in self.jobs.values() if j.running and (kind is None or j.kind == kind)]

    def active(self, kind: str | None = None) -> list[Job]:
        """Running and queued jobs."""
        return [j for j in self.jobs.values() if j.active and (kind is None or j.kind == kind)]

    def busy_datasets(self) -> set[str]:
        return {j.dataset for j in self.active() if j.dataset and j.kind != JobKind.TRAIN}

    def job_for_run(self, run_id: str) -> Job | None:
        for j in self.jobs.values():
            if j.run_id == run_id and j.kind == JobKind.TRAIN:
                return j
        return None

    def adopt(self, run_id: str, pid: int) -> Job:
        """A training this app did not start (a detached run of an earlier session, found by the pid
        holding its run lock), as a job that can be cancelled like the others."""
        job = self.job_for_run(run_id)
        if job is None or job.pid != pid:
            jid = f"detached-{run_id}"
            job = Job(id=jid, kind=JobKind.TRAIN, title=f"train {run_id} (detached)", argv=[],
                      log_path=self.ws.job_log(jid), run_id=run_id, status=JobStatus.DETACHED, pid=pid,
                      started=time.time(), detached=True)
            self.jobs[jid] = job
        return job

    # ---- sharing the machine ---------------------------------------------------------------------
    def is_light(self, job: Job) -> bool:
        return job.kind in LIGHT_KINDS

    def is_gpu_job(self, job: Job) -> bool:
        """A training whose device is not cpu, on a machine with GPUs (`auto` then means a GPU)."""
        if job.gpus:
            return True
        return job.kind == JobKind.TRAIN and self._gpus > 0 and train_device(job.argv) != Device.CPU

    def gpus_needed(self, job: Job) -> int:
        """One GPU per data-parallel worker (or the ones asked for)."""
        return len(job.want_gpus) if job.want_gpus else train_workers(job.argv)

    def _free_gpus(self, job: Job) -> list[int] | None:
        """GPUs no running job holds for `job` (those it asked for, or the lowest free ones); with
        `share_gpus`, the least busy ones when not enough are free. None: it has to wait."""
        n = self.gpus_needed(job)
        if self._gpus <= 0 or n > self._gpus:
            return None
        load = [0] * self._gpus
        for j in self.running():
            for g in j.gpus:
                if g < self._gpus:
                    load[g] += 1
        if job.want_gpus:
            ok = all(g < self._gpus for g in job.want_gpus) and (
                self.settings.share_gpus or all(load[g] == 0 for g in job.want_gpus))
            return list(job.want_gpus) if ok else None
        order = sorted(range(self._gpus), key=lambda i: (load[i], i))
        idle = [g for g in order if load[g] == 0]
        if len(idle) >= n:
            return sorted(idle[:n])
        return sorted(order[:n]) if self.settings.share_gpus else None

    def _wait_reason(self, job: Job) -> str | None:
        """What `job` has to wait for before it may start (None: it may start now)."""
        if self.is_light(job):
            return None
        if self.is_gpu_job(job):
            if self._free_gpus(job) is not None:
                return None
            n = self.gpus_needed(job)
            if n > self._gpus:
                return f"{n} GPUs (this machine has {self._gpus})"
            asked = f"GPU {','.join(map(str, job.want_gpus))}" if job.want_gpus else f"{n} free GPU(s)"
            return f"{asked} (all {self._gpus} in use)" if not job.want_gpus else f"{asked} to be free"
        if self.settings.policy == JobPolicy.QUEUE:
            cpu_jobs = [j for j in self.running() if not self.is_light(j) and not self.is_gpu_job(j)]
            if cpu_jobs:
                return f"{cpu_jobs[0].title} to end"
        return None

    def _schedule(self) -> None:
        """Start the queued jobs that may start now, oldest first."""
        queued = sorted((j for j in self.jobs.values() if j.status == JobStatus.QUEUED),
                        key=lambda j: (j.created or 0, j.id))
        for job in queued:
            reason = self._wait_reason(job)
            if reason is None:
                self._launch(job)
            elif reason != job.waiting_for:
                job.waiting_for = reason
                self.on_change(job)

    def _rebalance(self) -> None:
        """Give each running job its share of the cores (the oldest get the remainder) and rewrite
        the budget file of each job whose share changed."""
        if not self.thread_budgets:
            return
        sharing = []
        for j in self.running():
            if self.is_light(j):
                j.threads = 1
            else:
                sharing.append(j)
        sharing.sort(key=lambda j: (j.started or 0, j.id))
        for job, n in zip(sharing, thread_shares(self.cores, len(sharing))):
            if job.threads != n:
                job.threads = n
                try:
                    write_budget(self.ws.job_threads(job.id), n)
                except OSError:
                    pass                  # the child keeps its current share

    def _release(self, job: Job) -> None:
        """A job ended: its cores and GPU go to the others, queued jobs may start."""
        self.ws.job_threads(job.id).unlink(missing_ok=True)
        self._rebalance()
        self._schedule()

    def child_env(self, job: Job) -> dict[str, str]:
        """The environment of the job's process: its thread budget and its GPU."""
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["COLUMNS"] = env.get("SESSREC_LOG_COLUMNS", "120")
        env.update(job.env)
        if self.thread_budgets and job.threads is not None:
            env.update(budget_env(job.threads, None if self.is_light(job) else self.ws.job_threads(job.id)))
        if job.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids(job, env))
        return env

    def gpu_ids(self, job: Job, env: dict[str, str] | None = None) -> list[str]:
        """The job's GPUs as the system names them: the app's own CUDA_VISIBLE_DEVICES (if any)
        lists the GPUs it may use, and the job's indices pick among them."""
        env = dict(os.environ if self.env is None else self.env) if env is None else env
        visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return [visible[g] if g < len(visible) else str(g) for g in job.gpus]

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
        recs.sort(key=lambda r: r.get("started") or r.get("created") or 0, reverse=True)
        for rec in recs[:limit]:
            if not rec.get("id") or rec["id"] in self.jobs:
                continue
            job = Job.from_record(rec)
            if not job.log_path.is_file():        # the workspace was moved: the log sits next to the record
                job.log_path = self.ws.job_log(job.id)
            if job.status == JobStatus.QUEUED:
                job.status = JobStatus.INTERRUPTED
                job.error = job.error or "not started: the app quit while the job was queued"
            elif job.status in RUNNING or job.status == JobStatus.DETACHED:
                if process_alive(job.pid, job.started):
                    job.status, job.detached = JobStatus.DETACHED, True
                else:
                    job.status = JobStatus.INTERRUPTED
                    self.ws.job_threads(job.id).unlink(missing_ok=True)
            job.read_log()
            self.jobs[job.id] = job

    def _save(self, job: Job) -> None:
        try:
            write_json(self.ws.job_record(job.id), job.record())
        except OSError:
            pass

    def new_id(self, kind: str, label: str = "") -> str:
        self._counter += 1
        base = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}" + (f"-{label}" if label else "")
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:60]
        jid, n = base, 1
        while jid in self.jobs or self.ws.job_record(jid).exists():
            n += 1
            jid = f"{base}-{n}"
        return jid

    # ---- start -----------------------------------------------------------------------------------
    def start(self, kind: str, args: list[str], title: str, dataset: str | None = None,
              run_id: str | None = None, job_id: str | None = None, env: dict[str, str] | None = None,
              gpus: list[int] | None = None) -> Job:
        """Start `engine --workspace W --events jsonl ARGS` as a job, or queue it when it has to
        wait for a CPU slot or a GPU; returns at once. `env`: added to the child's environment
        (secrets go there, not in ARGS: argv is visible in `ps` and kept in the job record).
        `gpus`: the GPUs (indices among the app's) a GPU training must have; None: any free ones."""
        jid = job_id or self.new_id(kind, run_id or dataset or "")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.engine_cmd, "--workspace", str(self.workspace), "--events", "jsonl", *args]
        job = Job(id=jid, kind=_vocab(JobKind, kind, kind), title=title, argv=argv,
                  log_path=self.ws.job_log(jid), dataset=dataset, run_id=run_id, created=time.time(),
                  env=dict(env or {}), want_gpus=list(gpus) if gpus else None)
        self.jobs[jid] = job
        self._schedule()
        if job.status == JobStatus.QUEUED:
            self._save(job)           # a record, so that a crash of the app leaves a trace of it
            self.on_change(job)
        return job

    def _launch(self, job: Job) -> None:
        """Take the job's resources (a GPU, a share of the cores) and start its process."""
        if self.is_gpu_job(job):
            job.gpus = self._free_gpus(job) or []
        job.status, job.started, job.waiting_for = JobStatus.STARTING, time.time(), None
        self._rebalance()
        self.spawn(self._run(job), f"job-{job.id}")
        self.on_change(job)

    def _popen(self, job: Job) -> subprocess.Popen:
        with open(job.log_path, "ab") as log:
            return subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True, env=self.child_env(job), close_fds=True)

    async def _run(self, job: Job) -> None:
        try:
            proc = self._popen(job)
        except OSError as e:
            job.status, job.error, job.finished = JobStatus.FAILED, f"could not start the engine: {e}", time.time()
            self._save(job)
            self.on_change(job)
            self._release(job)
            return
        self._procs[job.id] = proc
        job.pid, job.status = proc.pid, JobStatus.RUNNING
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
                job.status, job.detached = JobStatus.DETACHED, True
                self._save(job)
            raise
        finally:
            tail.cancel()
        job.read_log()
        self._finish(job, proc.returncode)

    async def _tail_loop(self, job: Job) -> None:
        while True:
            await asyncio.sleep(0.25)
            if job.read_log():
                self.on_change(job)

    def read_stderr(self, job: Job) -> bool:
        """New lines of the job's log (a detached job's, which no task tails); True if any."""
        return job.read_log()

    # ---- events ----------------------------------------------------------------------------------
    def handle_line(self, job: Job, line: str) -> dict | None:
        line = line.strip()
        if not line:
            return None
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            job._append_log([line])          # stray print on stdout: show it with the log
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
            job.suggestion = ev.get("suggestion") or None
        elif t == "result":
            job.result = {**(job.result or {}), **ev}
        elif t == "serving":
            job.serving = ev
        self.on_event(job, ev)
        self.on_change(job)
        return ev

    def _finish(self, job: Job, rc: int | None) -> None:
        self._procs.pop(job.id, None)
        job.returncode, job.finished = rc, time.time()
        # a training's own events are in its run folder; its result line says how the run ended
        run_status = ((job.result or {}).get("run") or {}).get("status")
        if job.kind == JobKind.TRAIN and rc == 0 and run_status == "stopped":
            job.status = JobStatus.STOPPED
        elif rc == 0:
            job.status = JobStatus.DONE
        elif job.cancel_requested:
            job.status = JobStatus.CANCELLED
        else:
            job.status = JobStatus.FAILED
        if job.status == JobStatus.FAILED and not job.error:
            tail = [ln for ln in job.log_lines if ln.strip()]
            last_line = tail[-1].strip() if tail else ""
            job.error = f"the engine stopped: {describe_exit(rc)}" + (f": {last_line}" if last_line else "")
        self._save(job)
        self.on_change(job)
        self._release(job)

    # ---- cancel / detach -------------------------------------------------------------------------
    def grace(self, job: Job) -> float:
        """Seconds between SIGTERM and SIGKILL for this job."""
        # a tuning job stops like a training: its current trial's run saves and ends as stopped
        return self.kill_after_train if job.kind in (JobKind.TRAIN, JobKind.TUNE) else self.kill_after

    def kill_now(self, job: Job) -> bool:
        """SIGKILL the job's process group at once (a second cancel of a job that is stopping)."""
        if not (job.running or job.status == JobStatus.DETACHED) or not process_alive(job.pid, job.started):
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
        """SIGTERM now (the engine stops cleanly), SIGKILL to its process group after `grace(job)`.
        A queued job is just removed (it has no process, log or resources)."""
        pid = job.pid
        if job.status == JobStatus.QUEUED:
            self.jobs.pop(job.id, None)
            self.ws.job_record(job.id).unlink(missing_ok=True)
            job.status, job.cancel_requested, job.finished = JobStatus.CANCELLED, True, time.time()
            self.on_change(job)
            return True
        if job.status == JobStatus.DETACHED:
            if not process_alive(pid, job.started):
                job.status = JobStatus.INTERRUPTED
                self._save(job)
                self.on_change(job)
                return False
        elif not job.running:
            return False
        job.cancel_requested = True
        job.status = JobStatus.STOPPING
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
            alive = proc.poll() is None if proc is not None else \
                process_alive(job.pid, job.started) and job.status == JobStatus.STOPPING
            if not alive:
                if proc is None and job.status == JobStatus.STOPPING:   # a detached job: nobody reaps it for us
                    job.status, job.finished = JobStatus.CANCELLED, time.time()
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
        if job.id not in self._procs and job.status == JobStatus.STOPPING:
            job.status, job.finished = JobStatus.CANCELLED, time.time()
            self._save(job)
            self.on_change(job)

    def detach_all(self) -> list[Job]:
        """Mark running jobs as detached (the app quits and leaves them running); queued jobs,
        which nobody will start, are cancelled."""
        out = []
        for job in self.active():
            if job.status == JobStatus.QUEUED:
                job.status, job.finished = JobStatus.CANCELLED, time.time()
                job.error = "not started: the app quit while the job was queued"
            else:
                job.status, job.detached = JobStatus.DETACHED, True
                out.append(job)
            self._save(job)
        return out

    def cancel_all(self) -> list[Job]:
        """Cancel the queued jobs, then stop the running and detached ones."""
        jobs = sorted(self.jobs.values(), key=lambda j: j.status != JobStatus.QUEUED)
        return [j for j in jobs if (j.active or j.status == JobStatus.DETACHED) and self.cancel(j)]

    async def wait(self, job: Job, timeout: float = 60.0) -> Job:
        """Until the job has finished (tests and scripts)."""
        deadline = time.monotonic() + timeout
        while job.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return job

    def forget_finished(self) -> int:
        """Drop finished jobs from the list and their records (their .log files stay)."""
        gone = [jid for jid, j in self.jobs.items() if not j.active and j.status != JobStatus.DETACHED]
        for jid in gone:
            del self.jobs[jid]
            try:
                self.ws.job_record(jid).unlink(missing_ok=True)
            except OSError:
                pass
        return len(gone)


async def run_to_end(manager: JobManager, kind: str, args: Iterable[str], title: str = "",
                     timeout: float = 120.0, **kw: Any) -> Job:
    job = manager.start(kind, list(args), title or kind, **kw)
    return await manager.wait(job, timeout)
