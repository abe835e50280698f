"""A job as the runner and the app see it (`Job`: its request, process, progress, log tail and
outcome) and its record on disk (`<workspace>/logs/<job-id>.json`), so that the list of recent jobs
survives a restart of the app (`load_history`)."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.atomic import write_json
from engine.core.process import process_alive
from engine.core.schema import JobKind, JobStatus
from engine.core.workspace import Workspace
from engine.jobs.requests import JobRequest

RUNNING = (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.STOPPING)      # a child process exists
ACTIVE = tuple(s for s in JobStatus if s.active)                            # RUNNING and QUEUED
FINISHED = tuple(s for s in JobStatus if s.finished)
TAIL_LINES = 400


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
    # what was asked, typed (None for a job read back from its record, or a detached run adopted)
    request: JobRequest | None = None
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
    waiting_for: str | None = None   # what a queued job waits for
    serving: dict | None = None      # a server's "serving" line (its address, model, run)
    # extra environment of its process (a server's API key): never written to the job record
    env: dict[str, str] = field(default_factory=dict, repr=False)
    _tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES), repr=False)
    _log_pos: int = field(default=0, repr=False)
    _log_partial: str = field(default="", repr=False)
    _log_version: int = field(default=0, repr=False)

    @property
    def want_gpus(self) -> list[int] | None:
        """The GPUs the user asked for (None: any free ones)."""
        return list(self.request.gpus) if getattr(self.request, "gpus", None) else None

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

    def append_log(self, lines: list[str]) -> None:
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
        self.append_log(lines)
        return bool(lines)

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now if now is not None else time.time())
        return max(0.0, end - self.started)

    def overall(self) -> tuple[float | None, float | None]:
        """(fraction done, seconds left) of a pipeline job from its progress lines (a training
        job's progress is its run's: see the app's controller)."""
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
        return cls(id=rec["id"], kind=_vocab(JobKind, rec.get("kind"), rec.get("kind", "?")),
                   title=rec.get("title", rec["id"]), argv=list(rec.get("argv") or []),
                   log_path=Path(rec.get("log") or ""), dataset=rec.get("dataset"), run_id=rec.get("run_id"),
                   status=_vocab(JobStatus, rec.get("status"), JobStatus.INTERRUPTED), pid=rec.get("pid"),
                   created=rec.get("created", rec.get("started")), started=rec.get("started"),
                   finished=rec.get("finished"), returncode=rec.get("returncode"), error=rec.get("error"),
                   suggestion=rec.get("suggestion"), detached=bool(rec.get("detached")),
                   gpus=list(rec.get("gpus") or ([] if rec.get("gpu") is None else [rec["gpu"]])),
                   from_history=True)


def save_record(ws: Workspace, job: Job) -> None:
    """Write the job's record (best effort: a full disk must not stop the runner)."""
    try:
        write_json(ws.job_record(job.id), job.record())
    except OSError:
        pass


def load_history(ws: Workspace, known: set[str], limit: int = 50) -> list[Job]:
    """Jobs of earlier sessions from their records (their stderr tails from the log files), newest
    first, leaving out the ids in `known`. A job that was running is `detached` if its process is
    alive, else `interrupted`; one that was queued never started."""
    if not ws.logs_dir.is_dir():
        return []
    recs = []
    for p in ws.logs_dir.glob("*.json"):
        try:
            recs.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    recs.sort(key=lambda r: r.get("started") or r.get("created") or 0, reverse=True)
    out = []
    for rec in recs[:limit]:
        if not isinstance(rec, dict) or not rec.get("id") or rec["id"] in known:
            continue
        job = Job.from_record(rec)
        if not job.log_path.is_file():        # the workspace was moved: the log sits next to the record
            job.log_path = ws.job_log(job.id)
        if job.status == JobStatus.QUEUED:
            job.status = JobStatus.INTERRUPTED
            job.error = job.error or "not started: the app quit while the job was queued"
        elif job.status in RUNNING or job.status == JobStatus.DETACHED:
            if process_alive(job.pid, job.started):
                job.status, job.detached = JobStatus.DETACHED, True
            else:
                job.status = JobStatus.INTERRUPTED
                ws.job_threads(job.id).unlink(missing_ok=True)
        job.read_log()
        out.append(job)
    return out
