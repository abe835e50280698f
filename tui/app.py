"""`sessrec-tui`: the terminal app. Each screen is a window onto the workspace (datasets, jobs,
training, runs, recommendations); long work runs in engine child processes owned by the App.

    sessrec-tui [--workspace DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal
from textual.worker import get_current_worker

from tui.commands import SessrecCommands
from tui.jobs import FINISHED, Job, JobManager
from tui.state import EventTail, RunState, run_state_from_dir, short_path

SCREENS_ORDER = (("help", "F1", "Help"), ("datasets", "F2", "Datasets"), ("jobs", "F3", "Jobs"),
                 ("train", "F4", "Train"), ("runs", "F5", "Runs"), ("recommend", "F6", "Recommend"))
PUBLISH_INTERVAL = 0.2      # job updates reach the screens at most 5 times a second
TAIL_INTERVAL = 0.5         # re-opened runs: how often their events file is read


def load_registry() -> dict[str, dict]:
    """Model specs as plain dicts (imports torch: call it in a thread worker)."""
    from engine.models.registry import all_specs
    return {name: {"kind": s.kind, "description": s.description, "defaults": dict(s.defaults),
                   "cpu_overrides": dict(s.cpu_overrides)} for name, s in all_specs().items()}


def load_device_info() -> dict:
    from engine.device import device_info
    return device_info()


def _modes() -> dict[str, Callable]:
    from tui.screens.datasets import DatasetsScreen
    from tui.screens.help import HelpScreen
    from tui.screens.jobs import JobsScreen
    from tui.screens.recommend import RecommendScreen
    from tui.screens.runs import RunsScreen
    from tui.screens.train import TrainScreen
    return {"datasets": DatasetsScreen, "jobs": JobsScreen, "train": TrainScreen, "runs": RunsScreen,
            "recommend": RecommendScreen, "help": HelpScreen}


class SessrecApp(App):
    """The app. State that outlives screens (jobs, open runs, caches) lives here."""

    CSS_PATH = "app.tcss"
    TITLE = "sessrec"
    MODES = _modes()
    DEFAULT_MODE = "datasets"
    COMMANDS = App.COMMANDS | {SessrecCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("f1", "show('help')", "Help", key_display="F1", id="screen.help"),
        Binding("f2", "show('datasets')", "Data", key_display="F2", id="screen.datasets"),
        Binding("f3", "show('jobs')", "Jobs", key_display="F3", id="screen.jobs"),
        Binding("f4", "show('train')", "Train", key_display="F4", id="screen.train"),
        Binding("f5", "show('runs')", "Runs", key_display="F5", id="screen.runs"),
        Binding("f6", "show('recommend')", "Rec", key_display="F6", id="screen.recommend"),
        Binding("question_mark", "show('help')", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
    ]

    def __init__(self, workspace: str | os.PathLike | None = None, *, engine_cmd: list[str] | None = None,
                 registry_loader: Callable[[], dict] | None = None,
                 device_loader: Callable[[], dict] | None = None, kill_after: float = 15.0,
                 kill_after_train: float = 120.0,
                 load_history: bool = True, show_timings: bool = True) -> None:
        super().__init__()
        from engine.workspace import Workspace
        self.ws = Workspace.open(workspace)
        self.ws.root.mkdir(parents=True, exist_ok=True)
        self.jobs = JobManager(self.ws.root, engine_cmd=engine_cmd, spawn=self._spawn_job,
                               on_change=self._job_changed, on_event=self._job_event, kill_after=kill_after,
                               kill_after_train=kill_after_train)
        if load_history:
            self.jobs.load_history()
        self.registry_loader = registry_loader or load_registry
        self.device_loader = device_loader or load_device_info
        self.registry: dict[str, dict] | None = None
        self.registry_error: str | None = None
        self.device: dict | None = None
        self.runs_live: dict[str, RunState] = {}
        self._tails: dict[str, EventTail] = {}
        self.current_run: str | None = None
        self.recommenders: dict[str, Any] = {}          # source key -> Recommender (cached)
        self.preferred_source: str | None = None        # what Recommend selects first
        self.train_preset: dict | None = None           # what Train preselects (the guided start)
        self.guide: str | None = None                   # the next step for a new user
        self.show_timings = show_timings                # off in screenshots: times vary
        self._job_dirty = False
        self._quitting = False
        self._seen_finished: set[str] = {j.id for j in self.jobs.jobs.values() if j.status in FINISHED}
        self.jobs_signal: Signal[None] = Signal(self, "jobs")
        self.data_signal: Signal[None] = Signal(self, "datasets")
        self.runs_signal: Signal[None] = Signal(self, "runs")
        self.run_signal: Signal[str] = Signal(self, "run")
        self.registry_signal: Signal[None] = Signal(self, "registry")

    # ---- start up ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.sub_title = short_path(self.ws.root)
        self.set_interval(PUBLISH_INTERVAL, self._publish_jobs)
        self.set_interval(TAIL_INTERVAL, self._poll_tails)
        self.load_registry_worker()

    @work(thread=True, exclusive=True, group="registry", exit_on_error=False)
    def load_registry_worker(self) -> None:
        try:
            reg = self.registry_loader()
        except Exception as e:          # the engine is broken: the app still opens
            self.call_from_thread(self._set_registry, None, f"{type(e).__name__}: {e}")
            return
        self.call_from_thread(self._set_registry, reg, None)
        try:
            dev = self.device_loader()
        except Exception as e:
            dev = {"cuda_available": False, "error": str(e)}
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._set_device, dev)

    def _set_registry(self, reg: dict | None, error: str | None) -> None:
        self.registry, self.registry_error = reg, error
        if error:
            self.notify(f"could not load the model registry: {error}", severity="error", timeout=10)
        self.registry_signal.publish(None)

    def _set_device(self, dev: dict) -> None:
        self.device = dev
        self.registry_signal.publish(None)

    # ---- navigation ----------------------------------------------------------------------------
    async def action_show(self, mode: str) -> None:
        if mode not in self.MODES:
            return
        # a modal on top of the current screen stays with that screen; leave it by switching
        await self.switch_mode(mode)

    def screen_for(self, mode: str):
        stack = self._screen_stacks.get(mode) or []
        return stack[0] if stack else None

    async def run_on(self, mode: str, action: str) -> None:
        """Switch to `mode` and run one of its screen's actions (the command palette uses it)."""
        await self.switch_mode(mode)
        screen = self.screen_for(mode)
        if screen is not None:
            await screen.run_action(action)

    # ---- jobs ----------------------------------------------------------------------------------
    def _spawn_job(self, coro, name: str):
        return self.run_worker(coro, name=name, group="jobs", exit_on_error=False)

    def start_job(self, kind: str, args: list[str], title: str, dataset: str | None = None,
                  run_id: str | None = None) -> Job | None:
        try:
            job = self.jobs.start(kind, args, title, dataset=dataset, run_id=run_id)
        except OSError as e:
            self.notify(f"could not start {title}: {e}", severity="error")
            return None
        if kind == "train" and run_id:
            self.runs_live[run_id] = RunState(run_id)
            self.current_run = run_id
            self.run_signal.publish(run_id)
        self.notify(f"started: {title}", timeout=3)
        return job

    def _job_event(self, job: Job, ev: dict) -> None:
        if job.kind != "train":
            return
        rid = ev.get("run_id") or job.run_id
        if not rid:
            return
        st = self.runs_live.setdefault(rid, RunState(rid))
        if st.feed(ev):
            self._tails.pop(rid, None)        # the child speaks for itself now
            self.run_signal.publish(rid)

    def _job_changed(self, job: Job) -> None:
        self._job_dirty = True
        if job.status in FINISHED and job.id not in self._seen_finished:
            self._seen_finished.add(job.id)
            self._job_finished(job)

    def _publish_jobs(self) -> None:
        if self._job_dirty:
            self._job_dirty = False
            self.jobs_signal.publish(None)

    def _job_finished(self, job: Job) -> None:
        ok = job.status == "done"
        if job.kind == "train":
            st = self.runs_live.get(job.run_id or "")
            if st is not None and not st.finished:
                if job.status == "cancelled":          # stopped before the run's first event
                    st.status, st.error = "stopped", None
                    st.version += 1
                else:
                    tail = [ln for ln in job.stderr_tail if ln.strip()]
                    st.fail(job.error or "the training process ended without a final event"
                            + (f": {tail[-1]}" if tail else ""))
                self.run_signal.publish(st.run_id)
            if job.status == "done":
                self.preferred_source = f"run:{job.run_id}"
                self.guide = None
                self.notify(f"run {job.run_id} finished. F6 Recommend: type item ids to see its top-10; "
                            f"F5 Runs to compare.", title="training done", timeout=8)
            elif job.status in ("stopped", "cancelled"):
                self.notify(f"run {job.run_id} stopped; its last checkpoint is kept", timeout=5)
            else:
                msg = job.error or "failed"
                if job.suggestion:
                    msg += f"\nsuggestion: {job.suggestion}"
                self.notify(msg, title=f"run {job.run_id} failed", severity="error", timeout=12)
            self.recommenders.pop(f"run:{job.run_id}", None)
            self.runs_signal.publish(None)
        else:
            if ok:
                self.notify(f"{job.title}: done", timeout=4)
            elif job.status == "cancelled":
                self.notify(f"{job.title}: cancelled", severity="warning", timeout=4)
            else:
                self.notify(f"{job.title}: {job.error or 'failed'}", title="job failed", severity="error",
                            timeout=12)
            # a rebuilt dataset invalidates cached baselines on it
            for key in [k for k in self.recommenders if job.dataset and k.endswith(f"@{job.dataset}")]:
                self.recommenders.pop(key, None)
            self.data_signal.publish(None)
            if ok and job.kind == "demo" and job.dataset:
                self._guide_after_demo(job.dataset)
        self.jobs_signal.publish(None)

    def _guide_after_demo(self, dataset: str) -> None:
        """The first-run path: demo built -> Train preselected -> Recommend."""
        if dataset not in self.ws.dataset_names():
            return
        if not self.ws.run_ids() or self.guide:
            self.train_preset = {"dataset": dataset, "model": "graph_transformer", "epochs": 3}
            cpu = not (self.device or {}).get("cuda_available")
            self.guide = (f"Step 2 of 3: dataset {dataset} is built. Press ctrl+s to train a Graph Transformer "
                          + ("(CPU preset, 3 epochs: a few minutes)" if cpu else "(3 epochs on the GPU)")
                          + ", or change the form first.")
            self.call_later(self._go_train)

    async def _go_train(self) -> None:
        await self.switch_mode("train")
        screen = self.screen_for("train")
        if screen is not None and hasattr(screen, "apply_preset"):
            screen.apply_preset()

    # ---- runs ----------------------------------------------------------------------------------
    def open_run(self, run_id: str) -> RunState | None:
        """Show a run on the Train screen: live if the app runs it, else from its events file
        (followed while the run is still going, e.g. a detached run after an SSH drop)."""
        job = self.jobs.job_for_run(run_id)
        if job is not None and job.running and run_id in self.runs_live:
            self.current_run = run_id
            self.run_signal.publish(run_id)
            return self.runs_live[run_id]
        run_dir = self.ws.run(run_id).root
        if not (run_dir / "config.json").exists() and not (run_dir / "events.jsonl").exists():
            self.notify(f"run {run_id}: no such run folder in {short_path(self.ws.runs_dir)}", severity="error")
            return None
        st, tail = run_state_from_dir(run_dir)
        self.runs_live[run_id] = st
        if not st.finished:
            self._tails[run_id] = tail
        self.current_run = run_id
        self.run_signal.publish(run_id)
        return st

    def _poll_tails(self) -> None:
        from tui.jobs import pid_is_engine
        for rid, tail in list(self._tails.items()):
            st = self.runs_live.get(rid)
            if st is None:
                self._tails.pop(rid, None)
                continue
            changed = False
            for ev in tail.poll():
                changed |= st.feed(ev)
            if st.finished:
                self._tails.pop(rid, None)
                self.runs_signal.publish(None)
            elif st.pid and not pid_is_engine(st.pid) and not changed:
                st.status, st.error = "interrupted", "the process ended without a final event"
                st.version += 1
                changed = True
                self._tails.pop(rid, None)
            if changed:
                self.run_signal.publish(rid)

    def stop_run(self, run_id: str) -> bool:
        """SIGTERM the run's process: the app's child, or a detached run by the pid in its events."""
        job = self.jobs.job_for_run(run_id)
        if job is not None and (job.running or job.status == "detached"):
            return self.jobs.cancel(job)
        st = self.runs_live.get(run_id)
        if st is None or st.finished or not st.pid:
            return False
        from tui.jobs import Job as _Job, pid_is_engine
        if not pid_is_engine(st.pid):
            return False
        ghost = _Job(id=f"detached-{run_id}", kind="train", title=f"train {run_id} (detached)", argv=[],
                     log_path=self.jobs.logs_dir / f"detached-{run_id}.log", run_id=run_id, status="detached",
                     pid=st.pid, started=st.started, detached=True)
        self.jobs.jobs[ghost.id] = ghost
        return self.jobs.cancel(ghost)

    # ---- quitting ------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        running = self.jobs.running()
        if not running or self._quitting:
            self.exit()
            return
        from tui.screens.modals import QuitScreen

        def done(choice: str | None) -> None:
            if choice == "stop":
                self._quitting = True
                stopping = [j for j in self.jobs.running() if self.jobs.cancel(j) or j.running]
                self.notify(f"stopping {len(stopping)} job(s) before quitting (ctrl+q again quits now)...",
                            timeout=10)
                self.run_worker(self._exit_when_stopped(stopping), group="quit", exit_on_error=False)
            elif choice == "detach":
                left = self.jobs.detach_all()
                self.exit(message="left running: " + ", ".join(j.title for j in left) if left else None)
        await self.push_screen(QuitScreen(running), done)

    async def _exit_when_stopped(self, jobs: list[Job]) -> None:
        """Quit once the stopped jobs have ended (they are killed after `kill_after` seconds)."""
        deadline = time.monotonic() + max((self.jobs.grace(j) for j in jobs), default=0.0) + 2.0
        while any(j.running for j in jobs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.exit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sessrec-tui", description="Terminal app for sessrec: datasets, "
                                "training runs and recommendations, keyboard first.")
    p.add_argument("--workspace", type=Path, help="workspace folder (default $SESSREC_HOME or ./workspace)")
    args = p.parse_args(argv)
    try:
        app = SessrecApp(args.workspace)
    except Exception as e:
        print(f"sessrec-tui: {e}", file=sys.stderr)
        return 2
    result = app.run()
    if isinstance(result, str) and result:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
