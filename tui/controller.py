"""The app's state and actions without a UI: jobs (engine child processes), runs (read through the
engine's run store, the same fold the CLI uses), the recommenders cache and the first-run guide.

Screens call these methods and read these properties; they never change the App or read private
attributes. The controller tells the screens what changed by posting Textual messages (defined
here) to every screen that listens; it imports no widget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from textual.message import Message
from textual.message_pump import MessagePump

from engine.core.schema import ErrorKind, JobKind, JobPolicy, JobStatus, RunStatus
from engine.core.workspace import Workspace
from engine.models.registry import SPECS, ModelSpec, get_spec
from engine.runs import RunState, RunStore, lock_holder, new_run_id
from engine.runs.events import RunFailed, append_event
from engine.serve.security import ADMIN_KEY_ENV, KEY_ENV
from tui import jobs as J
from tui.jobs import Job, JobManager

PUBLISH_INTERVAL = 0.2      # job changes reach the screens at most 5 times a second


# ---- messages to the screens (not bubbling: each listener gets its own copy) ----------------------
class ControllerMessage(Message, bubble=False):
    """Something the controller tells every listening screen. Never bubbles: each listener gets
    its own copy, so a screen's copy must not reach the App (which listens for itself)."""

    def __init_subclass__(cls, **kwargs) -> None:
        kwargs["bubble"] = False            # Textual's default would make every subclass bubble
        super().__init_subclass__(**kwargs)


class JobsChanged(ControllerMessage):
    """A job started, moved or ended."""


class DatasetsChanged(ControllerMessage):
    """A dataset was created, built, rebuilt or deleted."""


class RunsChanged(ControllerMessage):
    """A run started or ended (the runs list changed)."""


class RunUpdated(ControllerMessage):
    """New events of one run (its state's `version` moved)."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class StudiesChanged(ControllerMessage):
    """A tuning job started or ended (the studies and their trials changed)."""


class DeviceReady(ControllerMessage):
    """Device detection finished (`controller.device`)."""


class GuideChanged(ControllerMessage):
    """The first-run guide line changed."""


class Notice(ControllerMessage):
    """A notification for the user (the app shows it)."""

    def __init__(self, text: str, severity: str = "information", title: str = "", timeout: float = 5) -> None:
        super().__init__()
        self.text, self.severity, self.title, self.timeout = text, severity, title, timeout


class GoTo(ControllerMessage):
    """Switch to a screen and, optionally, run one of its actions (the app does it)."""

    def __init__(self, mode: str, action: str | None = None) -> None:
        super().__init__()
        self.mode, self.action = mode, action


@dataclass
class TrainRequest:
    """What the Train form asks for (validated by the form against the engine's configs)."""

    dataset: str
    model: str
    options: dict[str, Any]          # TrainConfig fields by name
    params: dict[str, Any]           # model hyperparameters that differ from the defaults
    workers: int = 1                 # data-parallel worker processes (--nproc)
    gpus: list[int] | None = None    # the GPUs to use (indices), None: any free ones


@dataclass
class TuneRequest:
    """What the Tune form asks for (checked by the CLI's own `tune` checks)."""

    dataset: str
    model: str
    study: str
    trials: int
    metric: str
    protocol: str
    options: dict[str, Any]          # TrainConfig fields by name, fixed for every trial


@dataclass
class ServeRequest:
    """What the Serve form asks for: `sessrec serve TARGET` on host:port with a runtime."""

    target: str                      # a run id or baseline:NAME@DATASET
    host: str
    port: int
    runtime: str
    api_key: str | None = None       # passed in the environment, never on the command line
    search: str = "auto"             # exact | pq | auto
    workers: int = 1


# the server's own names (engine.serve.security imports nothing heavy); the admin-only key is a fresh
# one per server the app starts, so that the app can reload it
SERVE_KEY_ENV, SERVE_ADMIN_KEY_ENV = KEY_ENV, ADMIN_KEY_ENV


class Controller:
    """One per app. `post` delivers a message to a listener (the app passes its safe poster)."""

    def __init__(self, ws: Workspace, *, engine_cmd: list[str] | None = None, spawn: Callable | None = None,
                 kill_after: float = 15.0, kill_after_train: float = 120.0, load_history: bool = True) -> None:
        self.ws = ws
        self.jobs = JobManager(ws.root, engine_cmd=engine_cmd, spawn=spawn, on_change=self._job_changed,
                               kill_after=kill_after, kill_after_train=kill_after_train)
        if load_history:
            self.jobs.load_history()
        self.startup_error = self.jobs.settings_error     # an unusable settings file (shown at start)
        self.runs = RunStore(ws)
        self.models: dict[str, ModelSpec] = SPECS
        self.device: dict | None = None
        self.guide: str | None = None
        self.current_run: str | None = None
        self._train_preset: dict | None = None
        self._preferred_source: str | None = None
        self._recommenders: dict[str, Any] = {}
        self._placeholders: dict[str, RunState] = {}      # runs started here, before their folder exists
        self._listeners: list[MessagePump] = []
        self._jobs_dirty = False
        self._last_publish = 0.0
        self._seen_finished: set[str] = {j.id for j in self.jobs.jobs.values() if j.status in _FINISHED}

    # ---- messages ------------------------------------------------------------------------------
    def listen(self, pump: MessagePump) -> None:
        if pump not in self._listeners:
            self._listeners.append(pump)

    def unlisten(self, pump: MessagePump) -> None:
        if pump in self._listeners:
            self._listeners.remove(pump)

    def post(self, cls: type[ControllerMessage], *args: Any, **kwargs: Any) -> None:
        for pump in list(self._listeners):
            pump.post_message(cls(*args, **kwargs))

    def notice(self, text: str, severity: str = "information", title: str = "", timeout: float = 5) -> None:
        self.post(Notice, text, severity, title, timeout)

    # ---- first-run guide and hand-offs between screens -------------------------------------------
    def set_guide(self, text: str | None) -> None:
        if text != self.guide:
            self.guide = text
            self.post(GuideChanged)

    def take_train_preset(self, datasets: set[str]) -> dict | None:
        """The Train form's preset after the guided demo build, once its dataset is listed."""
        p = self._train_preset
        if p is None or p.get("dataset") not in datasets:
            return None
        self._train_preset = None
        return p

    def prefer_source(self, key: str) -> None:
        """Open Recommend on this source next time (a finished run, or the Runs screen's choice)."""
        self._preferred_source = key

    def take_preferred_source(self) -> str | None:
        key, self._preferred_source = self._preferred_source, None
        return key

    # ---- models and devices --------------------------------------------------------------------
    def spec(self, model: str) -> ModelSpec:
        return get_spec(model)

    @property
    def has_cuda(self) -> bool:
        return bool((self.device or {}).get("cuda_available"))

    def set_device(self, info: dict) -> None:
        self.device = info
        self.jobs.gpus = int(info.get("gpu_count") or 0)    # each GPU training gets a GPU of its own
        self.post(DeviceReady)

    # ---- jobs ----------------------------------------------------------------------------------
    def _start(self, kind: JobKind, args: list[str], title: str, dataset: str | None = None,
               run_id: str | None = None, env: dict[str, str] | None = None,
               gpus: list[int] | None = None) -> Job | None:
        try:
            job = self.jobs.start(kind.value, args, title, dataset=dataset, run_id=run_id, env=env, gpus=gpus)
        except OSError as e:
            self.notice(f"could not start {title}: {e}", "error")
            return None
        self.notice(f"started: {title}", timeout=3)
        return job

    def busy_datasets(self) -> set[str]:
        """Datasets a pipeline job is writing or queued to write (a training only reads its dataset)."""
        return self.jobs.busy_datasets()

    def generate_demo(self, size: str, name: str | None, dataset: str) -> Job | None:
        self.set_guide(self.guide or ("Step 1 of 3: the demo dataset is being generated and built (F3 shows "
                                      "the job). The Train screen opens when it is ready."))
        return self._start(JobKind.DEMO, J.demo_args(size, name), f"demo {size} -> {dataset}", dataset=dataset)

    def import_log(self, path: str, fmt: str, name: str, test_file: str | None) -> Job | None:
        return self._start(JobKind.IMPORT, J.import_args(path, fmt, name, test_file), f"import {name} ({fmt})",
                           dataset=name)

    def build(self, name: str, force: bool | str = False) -> Job | None:
        what = "" if not force else " (all stages)" if force is True else f" (from {force})"
        return self._start(JobKind.BUILD, J.build_args(name, force), f"{'rebuild' if force else 'build'} {name}{what}",
                           dataset=name)

    def delete(self, name: str) -> Job | None:
        return self._start(JobKind.DELETE, J.delete_args(name), f"delete {name}", dataset=name)

    def start_training(self, req: TrainRequest) -> str | None:
        """Start a training job; returns its run id (shown at once as `starting`)."""
        run_id = new_run_id(req.model, self.ws.run_ids())
        others = self.jobs.running(JobKind.TRAIN.value)
        # a training run reads its dataset, it does not make it busy: no dataset on the job
        job = self._start(JobKind.TRAIN, J.train_args(req.dataset, req.model, run_id, req.options, req.params,
                                                      req.workers),
                          f"train {req.model} on {req.dataset}" + (f" ({req.workers} workers)" if req.workers > 1
                                                                    else ""), run_id=run_id, gpus=req.gpus)
        if job is None:
            return None
        self._placeholders[run_id] = RunState(run_id, model=req.model, dataset=req.dataset,
                                              kind=get_spec(req.model).kind.value)
        self.current_run = run_id
        if others:
            self.notice(f"{len(others)} other run(s) are training at the same time", "warning")
        if self.guide:
            self.set_guide("Step 3 of 3: training. When it finishes, press F6 (Recommend) and type item ids "
                           "or pick popular items.")
        self.post(RunUpdated, run_id)
        self.post(RunsChanged)
        return run_id

    # ---- tuning --------------------------------------------------------------------------------
    def start_tuning(self, req: TuneRequest) -> Job | None:
        """Start `engine tune` as a job (it reads its dataset: no dataset on the job)."""
        job = self._start(JobKind.TUNE, J.tune_args(req.dataset, req.model, req.study, req.trials, req.metric,
                                                     req.protocol, req.options),
                          f"tune {req.model} on {req.dataset} ({req.trials} trials)")
        if job is not None:
            self.post(StudiesChanged)
        return job

    def studies(self) -> list[dict]:
        """One line per stored study (a thread worker calls it: it imports Optuna and reads SQLite)."""
        from engine.tune.study import summaries
        return summaries(self.ws)

    def study_report(self, name: str) -> dict:
        """A study's setup, trials, best trials and the command for the best (thread worker)."""
        from engine.tune import study as S
        return S.report(self.ws, S.load(self.ws, name))

    def job_for_study(self, name: str) -> Job | None:
        """The active tuning job of this app that runs `name`."""
        for j in self.jobs.active(JobKind.TUNE.value):
            if any(a == "--study" and b == name for a, b in zip(j.argv, j.argv[1:])):
                return j
        return None

    def tuning(self) -> bool:
        return bool(self.jobs.active(JobKind.TUNE.value))

    # ---- serving -------------------------------------------------------------------------------
    def start_serving(self, req: ServeRequest) -> Job | None:
        """Start `engine serve` as a job (a light one: see tui.jobs.LIGHT_KINDS); the API key and a
        fresh admin key (for Reload) go in its environment, never in argv or the job record."""
        import secrets
        env = {SERVE_ADMIN_KEY_ENV: secrets.token_urlsafe(24)}
        if req.api_key:
            env[SERVE_KEY_ENV] = req.api_key
        return self._start(JobKind.SERVE, J.serve_args(req.target, req.host, req.port, req.runtime,
                                                       req.workers if req.workers > 1 else None,
                                                       search=req.search),
                           f"serve {req.target} on {req.host}:{req.port}", env=env)

    def serve_job(self) -> Job | None:
        """The newest active server of this app (None when none runs)."""
        jobs = sorted(self.jobs.active(JobKind.SERVE.value), key=lambda j: j.created or 0)
        return jobs[-1] if jobs else None

    def newer_run(self, run_id: str | None) -> RunState | None:
        """A better run to reload a server with: a finished run of the same model and dataset,
        created after `run_id`, whose best validation Recall@10 is higher (any newer one when the
        served run has no validation value, e.g. a baseline); the best of them, or None."""
        cur = self.runs.peek(run_id) if run_id else None
        if cur is None:
            return None
        newer = [s for s in self.runs.states() if s.status.succeeded and s.run_id != cur.run_id
                 and s.model == cur.model and s.dataset == cur.dataset and s.created > cur.created
                 and self.can_recommend(s.run_id)]
        if cur.best_value is not None:
            newer = [s for s in newer if s.best_value is not None and s.best_value > cur.best_value]
        return max(newer, key=lambda s: (s.best_value or 0.0, s.created), default=None)

    def cancel(self, job: Job) -> str:
        """Cancel a job (a queued one leaves the queue; a running one gets SIGTERM, then SIGKILL);
        a second cancel of a stopping job kills it now. Returns what happened, for the user."""
        if not (job.active or job.status == JobStatus.DETACHED):
            return f"{job.title} is not running ({job.status})"
        if job.status == JobStatus.QUEUED:
            self.jobs.cancel(job)
            return f"removed {job.title} from the queue"
        if job.status == JobStatus.STOPPING:
            return f"killed {job.title} (SIGKILL)" if self.jobs.kill_now(job) else f"{job.title} has ended"
        if self.jobs.cancel(job):
            return (f"stopping {job.title} (SIGTERM; killed if it does not stop in {self.jobs.grace(job):.0f}s; "
                    f"again kills it now)")
        return f"{job.title} has ended"

    def forget_finished(self) -> int:
        return self.jobs.forget_finished()

    def job_progress(self, job: Job) -> tuple[float | None, float | None]:
        """(fraction done, seconds left): a training job's from its run's events, others from the
        progress lines of the child."""
        if job.kind == JobKind.TRAIN and job.run_id:
            st = self.run_state(job.run_id)
            if st is not None:
                return st.progress()[0], st.eta()
        return job.overall()

    def _job_changed(self, job: Job) -> None:
        self._jobs_dirty = True
        if job.status in _FINISHED and job.id not in self._seen_finished:
            self._seen_finished.add(job.id)
            self._job_finished(job)

    def _job_finished(self, job: Job) -> None:
        if job.kind == JobKind.TRAIN:
            self._train_job_finished(job)
        else:
            if job.status == JobStatus.DONE:
                # a server ends when it is stopped: exit 0 after SIGTERM
                self.notice(f"{job.title}: {'stopped' if job.kind == JobKind.SERVE else 'done'}", timeout=4)
            elif job.status == JobStatus.CANCELLED:
                self.notice(f"{job.title}: cancelled", "warning", timeout=4)
            else:
                self.notice(f"{job.title}: {job.error or 'failed'}", "error", "job failed", timeout=12)
            if job.dataset:                      # a rebuilt dataset invalidates cached baselines on it
                for key in [k for k in self._recommenders if k.endswith(f"@{job.dataset}")]:
                    del self._recommenders[key]
            self.post(DatasetsChanged)
            if job.kind == JobKind.TUNE:          # its trials are runs
                self.post(StudiesChanged)
                self.post(RunsChanged)
            if job.status == JobStatus.DONE and job.kind == JobKind.DEMO and job.dataset:
                self._guide_after_demo(job.dataset)
        self._jobs_dirty = True

    def _train_job_finished(self, job: Job) -> None:
        rid = job.run_id or ""
        st = self.run_state(rid)
        if st is not None and not st.finished or (st is not None and st.status == RunStatus.INTERRUPTED):
            if job.status == JobStatus.CANCELLED and not self.ws.run(rid).exists:
                st.status = RunStatus.STOPPED            # stopped before the run's first event
                st.version += 1
            else:
                tail = [ln for ln in job.log_lines if ln.strip()]
                self._record_death(rid, (job.error or "the training process ended without a final event")
                                   + (f": {tail[-1].strip()}" if tail and tail[-1].strip() not in (job.error or "")
                                      else ""))
        st = self.run_state(rid)
        if st is not None and st.status.succeeded:
            self.prefer_source(f"run:{rid}")
            self.set_guide(None)
            self.notice(f"run {rid} finished. F6 Recommend: type item ids to see its top-10; F5 Runs to compare.",
                        title="training done", timeout=8)
        elif st is not None and st.status == RunStatus.STOPPED:
            self.notice(f"run {rid} stopped; its last checkpoint is kept", timeout=5)
        else:
            msg = (st.error if st is not None and st.error else job.error) or "failed"
            if st is not None and st.suggestion:
                msg += f"\nsuggestion: {st.suggestion}"
            self.notice(msg, "error", f"run {rid} failed", timeout=12)
        self._recommenders.pop(f"run:{rid}", None)
        self.post(RunUpdated, rid)
        self.post(RunsChanged)

    def _record_death(self, run_id: str, error: str) -> None:
        """The child died without its final event: write what its parent saw (exit status, last
        log line) as the run's `run_failed`, so every reader of the run agrees."""
        run = self.ws.run(run_id)
        st = self.runs.get(run_id) if run.exists else None
        if st is None:                                   # it never created its folder
            ph = self._placeholders.get(run_id)
            if ph is not None:
                ph.fail(error)
            return
        if lock_holder(run.lock) is not None or st.status.finished and st.status != RunStatus.INTERRUPTED:
            return
        try:
            append_event(run.events, run_id, RunFailed(error=error, error_kind=ErrorKind.ERROR.value))
        except Exception as e:                            # a full disk must not take the app down
            st.fail(f"{error} (not recorded: {e})")
        self.runs.get(run_id)

    def _guide_after_demo(self, dataset: str) -> None:
        """The first-run path: demo built -> Train preselected -> Recommend."""
        if not self.ws.run_ids() or self.guide:
            self._train_preset = {"dataset": dataset, "model": "graph_transformer", "epochs": 3}
            self.set_guide(f"Step 2 of 3: dataset {dataset} is built. Press ctrl+s to train a Graph Transformer "
                           + ("(3 epochs on the GPU)" if self.has_cuda else "(CPU preset, 3 epochs: a few minutes)")
                           + ", or change the form first.")
            self.post(GoTo, "train", "apply_preset")

    # ---- runs ----------------------------------------------------------------------------------
    def run_state(self, run_id: str | None) -> RunState | None:
        """What is known of a run: the store's state once its folder exists, else the placeholder
        of a run this app just started."""
        if not run_id:
            return None
        return self.runs.peek(run_id) or self._placeholders.get(run_id)

    def open_run(self, run_id: str) -> RunState | None:
        """Show a run on the Train screen (followed while it runs, e.g. a detached one)."""
        st = self.runs.get(run_id) if self.ws.run(run_id).exists else self._placeholders.get(run_id)
        if st is None:
            self.notice(f"run {run_id}: no such run folder in {self.ws.runs_dir}", "error")
            return None
        self.current_run = run_id
        self.post(RunUpdated, run_id)
        return st

    def list_runs(self) -> list[RunState]:
        """Every run, brought up to date (a thread worker calls it; the store is thread-safe)."""
        return self.runs.refresh()

    def job_for_run(self, run_id: str) -> Job | None:
        return self.jobs.job_for_run(run_id)

    def job_log(self, job: Job) -> tuple[tuple, list[str]]:
        """((job id, log version), the tail of its log): the key changes when new lines arrive."""
        self.jobs.read_stderr(job)            # a detached job has no tail loop of its own
        return (job.id, job.log_version), list(job.log_lines)

    def run_log(self, run_id: str) -> tuple[tuple, list[str]] | None:
        """The log of the job that trains `run_id` (None when no job of this app runs it)."""
        job = self.jobs.job_for_run(run_id)
        return self.job_log(job) if job is not None else None

    def stop_run(self, run_id: str) -> str:
        """Stop a run cleanly (SIGTERM): the app's child, or a detached run by the pid holding its
        lock. A second stop of a stopping run kills it. Returns what happened."""
        job = self.jobs.job_for_run(run_id)
        if job is not None and (job.active or job.status == JobStatus.DETACHED):
            if job.status == JobStatus.STOPPING:
                return (f"killed run {run_id} (SIGKILL); its last checkpoint is the last completed one"
                        if self.jobs.kill_now(job) else f"run {run_id} has ended")
            if self.jobs.cancel(job):
                return f"stopping run {run_id}: it saves last.pt and ends as 'stopped' (ctrl+t again kills it)"
        pid = lock_holder(self.ws.run(run_id).lock)
        if not pid:
            return f"run {run_id}: its process is not running any more"
        ghost = self.jobs.adopt(run_id, pid)
        self.jobs.cancel(ghost)
        return f"stopping run {run_id} (process {pid})"

    def _watched(self) -> list[str]:
        ids = {self.current_run} if self.current_run else set()
        ids |= {j.run_id for j in self.jobs.jobs.values() if j.kind == JobKind.TRAIN and j.run_id
                and (j.running or j.status == JobStatus.DETACHED)}
        ids |= {s.run_id for s in self.runs.states() if s.status == RunStatus.RUNNING}
        return [r for r in ids if r and self.ws.run(r).exists]

    def tick(self) -> None:
        """Called a few times a second by the app: follow the runs being watched (their new
        events) and publish job changes, rate-limited."""
        for rid in self._watched():
            known = self.runs.peek(rid)
            before = (known.version, known.status) if known is not None else None
            st = self.runs.get(rid)
            if st is None:
                continue
            if self._placeholders.pop(rid, None) is not None or before is None:
                self.post(RunsChanged)
            if before is None or (st.version, st.status) != before:
                self.post(RunUpdated, rid)
                if before is not None and st.finished and not before[1].finished:
                    self.post(RunsChanged)
        now = time.monotonic()
        if self._jobs_dirty and now - self._last_publish >= PUBLISH_INTERVAL:
            self._jobs_dirty = False
            self._last_publish = now
            self.post(JobsChanged)

    # ---- recommenders --------------------------------------------------------------------------
    def can_recommend(self, run_id: str) -> bool:
        """The run has a checkpoint to load (best, else last)."""
        run = self.ws.run(run_id)
        return run.best.exists() or run.last.exists()

    def recommender(self, key: str) -> Any | None:
        return self._recommenders.get(key)

    def keep_recommender(self, key: str, rec: Any) -> None:
        self._recommenders[key] = rec

    def default_source(self, sources: list[str]) -> str | None:
        """What Recommend opens on: the newest completed run, else session-kNN on a built dataset
        (the strongest simple baseline), else the first source."""
        runs = sorted((s for s in self.runs.states() if s.status.succeeded and f"run:{s.run_id}" in sources),
                      key=lambda s: s.created, reverse=True)
        if runs:
            return f"run:{runs[0].run_id}"
        return next((k for k in sources if k.startswith("baseline:sknn@")), sources[0] if sources else None)

    # ---- settings ------------------------------------------------------------------------------
    def toggle_policy(self) -> str:
        """Switch how jobs share the machine: share (together, the cores split) or queue (one CPU
        job at a time). Returns what happened, for the user."""
        new = JobPolicy.QUEUE if self.jobs.settings.policy == JobPolicy.SHARE else JobPolicy.SHARE
        try:
            self.jobs.set_settings(replace(self.jobs.settings, policy=new))
        except OSError as e:
            return f"job policy {new} applies now but could not be saved to {self.ws.settings}: {e.strerror or e}"
        finally:
            self._jobs_dirty = True
        return f"job policy: {new}"

    # ---- quitting ------------------------------------------------------------------------------
    def running_jobs(self) -> list[Job]:
        """Jobs running or queued (what quitting has to decide about)."""
        return self.jobs.active()

    def stop_all(self) -> list[Job]:
        return self.jobs.cancel_all()

    def detach_all(self) -> list[Job]:
        return self.jobs.detach_all()


_FINISHED = tuple(s.value for s in JobStatus if s.finished)
