"""The app's state and actions without a UI: jobs (engine child processes), runs (read through the
engine's run store, the same fold the CLI uses), the recommenders cache and the first-run guide.

Screens call these methods and read these properties; they never change the App or read private
attributes. The controller tells the screens what changed by posting Textual messages (defined
here) to every screen that listens; it imports no widget.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

from textual.message_pump import MessagePump

from engine.core.schema import JobKind, JobPolicy, JobStatus
from engine.core.workspace import Workspace
from engine.jobs import (
    BuildRequest,
    DeleteRequest,
    DemoRequest,
    ImportRequest,
    Job,
    JobManager,
    JobRequest,
    ServeRequest,
    TrainRequest,
    TuneRequest,
)
from engine.models.registry import SPECS, ModelSpec, get_spec
from engine.runs import RunState, RunStore, new_run_id
from engine.serve.security import ADMIN_KEY_ENV, KEY_ENV
from tui.messages import (
    ControllerMessage,
    DatasetsChanged,
    DeviceReady,
    GoTo,
    GuideChanged,
    JobsChanged,
    Notice,
    RunsChanged,
    RunUpdated,
    StudiesChanged,
)
from tui.run_tracking import RunTracking

PUBLISH_INTERVAL = 0.2      # job changes reach the screens at most 5 times a second


# the server's own names (engine.serve.security imports nothing heavy); the admin-only key is a fresh
# one per server the app starts, so that the app can reload it
SERVE_KEY_ENV, SERVE_ADMIN_KEY_ENV = KEY_ENV, ADMIN_KEY_ENV


class Controller(RunTracking):
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
    def _start(self, request: JobRequest, env: dict[str, str] | None = None) -> Job | None:
        title = request.title()
        try:
            job = self.jobs.start(request, env=env)
        except OSError as e:
            self.notice(f"could not start {title}: {e}", "error")
            return None
        self.notice(f"started: {title}", timeout=3)
        return job

    def busy_datasets(self) -> set[str]:
        """Datasets a pipeline job is writing or queued to write (a training only reads its dataset)."""
        return self.jobs.busy_datasets()

    def generate_demo(self, size: str, name: str | None) -> Job | None:
        self.set_guide(self.guide or ("Step 1 of 3: the demo dataset is being generated and built (F3 shows "
                                      "the job). The Train screen opens when it is ready."))
        return self._start(DemoRequest(size, name))

    def import_log(self, path: str, fmt: str, name: str, test_file: str | None) -> Job | None:
        return self._start(ImportRequest(path, fmt, name, test_file))

    def build(self, name: str, force: bool | str = False) -> Job | None:
        return self._start(BuildRequest(name, force))

    def delete(self, name: str) -> Job | None:
        return self._start(DeleteRequest(name))

    def start_training(self, req: TrainRequest) -> str | None:
        """Start a training job; returns its run id (shown at once as `starting`)."""
        run_id = req.run_id or new_run_id(req.model, self.ws.run_ids())
        others = self.jobs.running(JobKind.TRAIN.value)
        # a training run reads its dataset, it does not make it busy: no dataset on the job
        job = self._start(replace(req, run_id=run_id))
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
        job = self._start(req)
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
        return next((j for j in self.jobs.active(JobKind.TUNE.value)
                     if isinstance(j.request, TuneRequest) and j.request.study == name), None)

    def tuning(self) -> bool:
        return bool(self.jobs.active(JobKind.TUNE.value))

    # ---- serving -------------------------------------------------------------------------------
    def start_serving(self, req: ServeRequest) -> Job | None:
        """Start `engine serve` as a job (a light one: see engine.jobs.LIGHT_KINDS); the API key (the
        job runner takes it from the request) and a fresh admin key (for Reload) go in its
        environment, never in argv or the job record."""
        import secrets
        return self._start(req, env={SERVE_ADMIN_KEY_ENV: secrets.token_urlsafe(24)})

    def serve_job(self) -> Job | None:
        """The newest active server of this app (None when none runs)."""
        jobs = sorted(self.jobs.active(JobKind.SERVE.value), key=lambda j: j.created or 0)
        return jobs[-1] if jobs else None

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

    def _guide_after_demo(self, dataset: str) -> None:
        """The first-run path: demo built -> Train preselected -> Recommend."""
        if not self.ws.run_ids() or self.guide:
            self._train_preset = {"dataset": dataset, "model": "graph_transformer", "epochs": 3}
            self.set_guide(f"Step 2 of 3: dataset {dataset} is built. Press ctrl+s to train a Graph Transformer "
                           + ("(3 epochs on the GPU)" if self.has_cuda else "(CPU preset, 3 epochs: a few minutes)")
                           + ", or change the form first.")
            self.post(GoTo, "train", "apply_preset")

    def tick(self) -> None:
        """Called a few times a second by the app: follow the runs being watched (their new
        events) and publish job changes, rate-limited."""
        self.follow_runs()
        now = time.monotonic()
        if self._jobs_dirty and now - self._last_publish >= PUBLISH_INTERVAL:
            self._jobs_dirty = False
            self._last_publish = now
            self.post(JobsChanged)

    # ---- recommenders --------------------------------------------------------------------------
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
