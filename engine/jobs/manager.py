"""`JobManager`: starts, tracks, cancels and remembers the engine's child processes, and shares the
machine between them (`engine.jobs.scheduler`).

It reads each job's stdout line by line (JSON lines: progress, stage, result, error; a training's
run events are in its run folder, read by the engine's run store), tails its stderr from a log file
under `<workspace>/logs/`, cancels it (SIGTERM, then SIGKILL after a timeout) and records each job
as `<workspace>/logs/<job-id>.json` (`engine.jobs.records`). Nothing here imports Textual: the
manager runs on any asyncio loop and reports through plain callbacks, so it is tested without a UI
and drives `bench/concurrency.py` as it drives the app.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

from engine.core.errors import InputError
from engine.core.process import process_alive
from engine.core.schema import JobKind, JobStatus
from engine.core.threads import available_cores
from engine.core.workspace import Workspace
from engine.jobs.child import apply_line, describe_exit, engine_command, popen, pump_lines, signal_group
from engine.jobs.records import Job, load_history, save_record
from engine.jobs.requests import JobRequest
from engine.jobs.scheduler import JobSettings, Scheduler

Spawner = Callable[[Coroutine[Any, Any, None], str], Any]
Listener = Callable[[Job], None]
EventListener = Callable[[Job, dict], None]


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
        self.settings_error: str | None = None
        if settings is None:
            try:
                settings = JobSettings.load(self.ws.settings)
            except InputError as e:       # the app still opens, with the defaults, and says why
                settings, self.settings_error = JobSettings(), str(e)
        self.scheduler = Scheduler(self.ws, cores or available_cores(), gpus, settings, thread_budgets)
        self.jobs: dict[str, Job] = {}
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def logs_dir(self) -> Path:
        return self.ws.logs_dir

    @property
    def cores(self) -> int:
        return self.scheduler.cores

    @property
    def settings(self) -> JobSettings:
        return self.scheduler.settings

    @property
    def gpus(self) -> int:
        return self.scheduler.gpus

    @gpus.setter
    def gpus(self, n: int) -> None:
        """The app learns the GPU count after start-up (device detection imports torch)."""
        self.scheduler.gpus = max(0, n)
        self._schedule()

    def set_settings(self, settings: JobSettings) -> None:
        """Use `settings` from now on (queued jobs that may now start, start) and save them in the
        workspace; raises OSError when they cannot be saved (they apply anyway)."""
        self.scheduler.settings, self.settings_error = settings, None
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
        """Datasets a job is writing or queued to write."""
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
        return self.scheduler.is_light(job)

    def is_gpu_job(self, job: Job) -> bool:
        return self.scheduler.is_gpu_job(job)

    def child_env(self, job: Job) -> dict[str, str]:
        """The environment of the job's process: its thread budget and its GPUs."""
        return self.scheduler.child_env(job, self.env)

    def gpu_ids(self, job: Job) -> list[str]:
        """The job's GPUs as the system names them (see `Scheduler.gpu_ids`)."""
        return self.scheduler.gpu_ids(job, dict(os.environ if self.env is None else self.env))

    def _schedule(self) -> None:
        """Start the queued jobs that may start now, oldest first."""
        queued = sorted((j for j in self.jobs.values() if j.status == JobStatus.QUEUED),
                        key=lambda j: (j.created or 0, j.id))
        for job in queued:
            reason = self.scheduler.wait_reason(job, self.running())
            if reason is None:
                self._launch(job)
            elif reason != job.waiting_for:
                job.waiting_for = reason
                self.on_change(job)

    def _release(self, job: Job) -> None:
        """A job ended: its cores and GPUs go to the others, queued jobs may start."""
        self.ws.job_threads(job.id).unlink(missing_ok=True)
        self.scheduler.rebalance(self.running())
        self._schedule()

    # ---- history ---------------------------------------------------------------------------------
    def load_history(self, limit: int = 50) -> None:
        """Jobs of earlier sessions from their records (their stderr tails from the log files)."""
        for job in load_history(self.ws, set(self.jobs), limit):
            self.jobs[job.id] = job

    def new_id(self, kind: str, label: str = "") -> str:
        base = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}" + (f"-{label}" if label else "")
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:60]
        jid, n = base, 1
        while jid in self.jobs or self.ws.job_record(jid).exists():
            n += 1
            jid = f"{base}-{n}"
        return jid

    # ---- start -----------------------------------------------------------------------------------
    def start(self, request: JobRequest, title: str | None = None, job_id: str | None = None,
              env: dict[str, str] | None = None) -> Job:
        """Start `engine --workspace W --events jsonl ARGS` for `request` as a job, or queue it when
        it has to wait for a CPU slot or GPUs; returns at once. `env`: added to the child's
        environment (secrets go there, not in ARGS: argv is visible in `ps` and kept in the job
        record); a server's API key is taken from its request."""
        kind = request.kind
        dataset, run_id = request.writes(), request.trains()
        jid = job_id or self.new_id(kind.value, run_id or dataset or "")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.engine_cmd, "--workspace", str(self.workspace), "--events", "jsonl", *request.args()]
        child_env = dict(env or {})
        key = getattr(request, "api_key", None)
        if key:
            from engine.serve.security import KEY_ENV  # the server's own name for it
            child_env[KEY_ENV] = key
        job = Job(id=jid, kind=kind, title=title or request.title(), argv=argv, log_path=self.ws.job_log(jid),
                  dataset=dataset, run_id=run_id, request=request, created=time.time(), env=child_env)
        self.jobs[jid] = job
        self._schedule()
        if job.status == JobStatus.QUEUED:
            save_record(self.ws, job)     # a record, so that a crash of the app leaves a trace of it
            self.on_change(job)
        return job

    def _launch(self, job: Job) -> None:
        """Take the job's resources (GPUs, a share of the cores) and start its process."""
        if self.scheduler.is_gpu_job(job):
            job.gpus = self.scheduler.free_gpus(job, self.running()) or []
        job.status, job.started, job.waiting_for = JobStatus.STARTING, time.time(), None
        self.scheduler.rebalance(self.running())
        self.spawn(self._run(job), f"job-{job.id}")
        self.on_change(job)

    async def _run(self, job: Job) -> None:
        try:
            proc = popen(job, self.child_env(job))
        except OSError as e:
            job.status, job.error, job.finished = JobStatus.FAILED, f"could not start the engine: {e}", time.time()
            save_record(self.ws, job)
            self.on_change(job)
            self._release(job)
            return
        self._procs[job.id] = proc
        job.pid, job.status = proc.pid, JobStatus.RUNNING
        save_record(self.ws, job)
        self.on_change(job)
        # stdout is read by a thread that owns the pipe (plain blocking reads; no asyncio pipe
        # transport, whose clean-up is tied to the event loop that created it)
        lines: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=pump_lines, args=(proc, asyncio.get_running_loop(), lines),
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
                save_record(self.ws, job)
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
        ev = apply_line(job, line)
        if ev is not None:
            self.on_event(job, ev)
        if ev is not None or line.strip():
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
        save_record(self.ws, job)
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
        return signal_group(job.pid, signal.SIGKILL)

    def cancel(self, job: Job) -> bool:
        """SIGTERM now (the engine stops cleanly), SIGKILL to its process group after `grace(job)`.
        A queued job is just removed (it has no process, log or resources)."""
        if job.status == JobStatus.QUEUED:
            self.jobs.pop(job.id, None)
            self.ws.job_record(job.id).unlink(missing_ok=True)
            job.status, job.cancel_requested, job.finished = JobStatus.CANCELLED, True, time.time()
            self.on_change(job)
            return True
        if job.status == JobStatus.DETACHED:
            if not process_alive(job.pid, job.started):
                job.status = JobStatus.INTERRUPTED
                save_record(self.ws, job)
                self.on_change(job)
                return False
        elif not job.running:
            return False
        job.cancel_requested = True
        job.status = JobStatus.STOPPING
        try:
            if job.pid:
                os.kill(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        save_record(self.ws, job)
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
                    save_record(self.ws, job)
                    self.on_change(job)
                return
        signal_group(job.pid, signal.SIGKILL)
        if job.id not in self._procs and job.status == JobStatus.STOPPING:
            job.status, job.finished = JobStatus.CANCELLED, time.time()
            save_record(self.ws, job)
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
            save_record(self.ws, job)
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


async def run_to_end(manager: JobManager, request: JobRequest, timeout: float = 120.0, **kw: Any) -> Job:
    job = manager.start(request, **kw)
    return await manager.wait(job, timeout)
