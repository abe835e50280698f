"""How jobs share the machine (see `engine.core.threads`).

Every running job but the light ones (delete, serve) gets its share of the cores, passed at start in
the environment and rewritten into its budget file when a job starts or ends (a GPU training counts
too: it builds batches and runs Python on the CPU). `JobSettings.policy` `share` runs CPU jobs
together, `queue` runs one at a time (later ones wait as `queued`). A training whose device is not
`cpu`, on a machine with GPUs, is a GPU job: it gets GPUs of its own (one per data-parallel worker)
through CUDA_VISIBLE_DEVICES and waits when they are taken, unless `share_gpus` is on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engine.core.atomic import write_json
from engine.core.errors import InputError
from engine.core.schema import Device, JobKind, JobPolicy, values
from engine.core.threads import budget_env, thread_shares, write_budget
from engine.core.workspace import Workspace
from engine.jobs.records import Job

# never queued, one thread, not in the shares: quick file work, and servers. A server runs until it
# is stopped and is idle between requests: counted as a CPU job it would hold the `queue` policy's
# slot for ever and take a share of the cores from trainings; one thread answers one session's
# request in milliseconds (the Recommend screen scores the same way).
LIGHT_KINDS = (JobKind.DELETE, JobKind.SERVE)


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


class Scheduler:
    """Which queued job may start (a CPU slot, free GPUs), which GPUs it gets, each running job's
    share of the cores, and the environment that hands them to its process.

    `cores`: the cores to share; `gpus`: how many GPUs the app found (0: every job is a CPU job);
    `thread_budgets=False` leaves each child all the cores."""

    def __init__(self, ws: Workspace, cores: int, gpus: int = 0, settings: JobSettings | None = None,
                 thread_budgets: bool = True) -> None:
        self.ws = ws
        self.cores = cores
        self.gpus = max(0, gpus)
        self.settings = settings or JobSettings()
        self.thread_budgets = thread_budgets

    def is_light(self, job: Job) -> bool:
        return job.kind in LIGHT_KINDS

    def is_gpu_job(self, job: Job) -> bool:
        """A training whose device is not cpu, on a machine with GPUs (`auto` then means a GPU)."""
        if job.gpus:
            return True
        device = job.request.device() if job.request is not None else Device.CPU.value
        return job.kind == JobKind.TRAIN and self.gpus > 0 and device != Device.CPU

    def gpus_needed(self, job: Job) -> int:
        """One GPU per data-parallel worker (or the ones asked for)."""
        return job.request.gpu_workers() if job.request is not None else 1

    def free_gpus(self, job: Job, running: Iterable[Job]) -> list[int] | None:
        """GPUs no running job holds for `job` (those it asked for, or the lowest free ones); with
        `share_gpus`, the least busy ones when not enough are free. None: it has to wait."""
        n = self.gpus_needed(job)
        if self.gpus <= 0 or n > self.gpus:
            return None
        load = [0] * self.gpus
        for j in running:
            for g in j.gpus:
                if g < self.gpus:
                    load[g] += 1
        want = job.want_gpus
        if want:
            ok = all(g < self.gpus for g in want) and (self.settings.share_gpus or all(load[g] == 0 for g in want))
            return list(want) if ok else None
        order = sorted(range(self.gpus), key=lambda i: (load[i], i))
        idle = [g for g in order if load[g] == 0]
        if len(idle) >= n:
            return sorted(idle[:n])
        return sorted(order[:n]) if self.settings.share_gpus else None

    def wait_reason(self, job: Job, running: list[Job]) -> str | None:
        """What `job` has to wait for before it may start (None: it may start now)."""
        if self.is_light(job):
            return None
        if self.is_gpu_job(job):
            if self.free_gpus(job, running) is not None:
                return None
            n = self.gpus_needed(job)
            if n > self.gpus:
                return f"{n} GPUs (this machine has {self.gpus})"
            want = job.want_gpus
            asked = f"GPU {','.join(map(str, want))}" if want else f"{n} free GPU(s)"
            return f"{asked} (all {self.gpus} in use)" if not want else f"{asked} to be free"
        if self.settings.policy == JobPolicy.QUEUE:
            cpu_jobs = [j for j in running if not self.is_light(j) and not self.is_gpu_job(j)]
            if cpu_jobs:
                return f"{cpu_jobs[0].title} to end"
        return None

    def rebalance(self, running: list[Job]) -> None:
        """Give each running job its share of the cores (the oldest get the remainder) and rewrite
        the budget file of each job whose share changed."""
        if not self.thread_budgets:
            return
        sharing = []
        for j in running:
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

    def child_env(self, job: Job, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of the job's process: its thread budget and its GPUs."""
        env = dict(os.environ if base is None else base)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["COLUMNS"] = env.get("SESSREC_LOG_COLUMNS", "120")
        env.update(job.env)
        if self.thread_budgets and job.threads is not None:
            env.update(budget_env(job.threads, None if self.is_light(job) else self.ws.job_threads(job.id)))
        if job.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids(job, env))
        return env

    def gpu_ids(self, job: Job, env: dict[str, str]) -> list[str]:
        """The job's GPUs as the system names them: the app's own CUDA_VISIBLE_DEVICES (if any)
        lists the GPUs it may use, and the job's indices pick among them."""
        visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return [visible[g] if g < len(visible) else str(g) for g in job.gpus]
