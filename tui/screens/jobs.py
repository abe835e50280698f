"""Jobs: running, queued and recent engine child processes, with progress, elapsed time, ETA, the
stderr tail, cancel, and how jobs share the machine (the job policy)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Log, Static

from engine.core.schema import JobKind, JobPolicy, JobStatus
from engine.jobs import TAIL_LINES, Job, JobManager, describe_exit
from tui.controller import Controller
from tui.format import JOB_STYLE, fmt_bar, fmt_duration, short_path
from tui.messages import JobsChanged
from tui.screens.base import BaseScreen

COLUMNS = ("status", "job", "progress", "elapsed", "ETA")


def job_cells(job: Job, now: float, progress) -> list:
    """The table row of a job; `progress(job)` gives (fraction, seconds left)."""
    frac, eta = progress(job)
    if job.status == JobStatus.QUEUED:
        prog = f"waits for {job.waiting_for}" if job.waiting_for else "waiting..."
    elif job.running:
        prog = f"{fmt_bar(frac, 10)} {frac * 100:3.0f}%" if frac is not None else "working..."
    else:
        prog = "[##########] 100%" if job.status == JobStatus.DONE else "-"
    return [Text(job.status, style=JOB_STYLE.get(job.status, "")), job.title, prog,
            fmt_duration(job.elapsed(now)), fmt_duration(eta) if job.running and eta is not None else "-"]


def stage_lines(job: Job, now: float, controller: Controller, root: Path | None = None) -> Text:
    t = Text()
    t.append(job.title, style="bold")
    t.append(f"  {job.status}", style=JOB_STYLE.get(job.status, ""))
    if job.pid:
        t.append(f"  pid {job.pid}", style="dim")
    if job.running and job.threads:
        t.append(f"  {job.threads} thread{'s' if job.threads > 1 else ''}", style="dim")
    if job.running and job.gpus:
        t.append(f"  GPU {','.join(map(str, job.gpus))}", style="dim")
    if job.returncode is not None and job.status != JobStatus.DONE:
        t.append(f"  ({describe_exit(job.returncode)})", style="dim")
    t.append("\n")
    if job.status == JobStatus.QUEUED and job.waiting_for:
        t.append(f"queued: starts when it has {job.waiting_for}\n" if "GPU" in job.waiting_for
                 else f"queued: waits for {job.waiting_for} (job policy queue; ctrl+g: share)\n", style="yellow")
    if job.error:
        t.append(f"error: {job.error}\n", style="red")
    if job.suggestion:
        t.append(f"suggestion: {job.suggestion}\n", style="yellow")
    st = controller.run_state(job.run_id) if job.kind == JobKind.TRAIN else None
    if st is not None:
        ev = st.last_step
        if ev is not None:
            t.append(f"epoch {ev.epoch}  step {ev.epoch_step}/{ev.steps_per_epoch}  loss {ev.loss}  "
                     f"{ev.examples_per_s} examples/s  ETA {fmt_duration(ev.eta_s)}\n")
        else:
            t.append(f"run {st.run_id}: {st.progress()[1]}\n")
        t.append("F4 (or enter here) shows its charts\n", style="dim")
    width = max((len(s) for s in job.stages), default=0)
    for name, sp in job.stages.items():
        frac = sp.fraction
        t.append(f"{name:<{width}} ", style="bold" if name == job.current_stage else "")
        t.append(fmt_bar(frac, 16) + " ")
        if sp.total:
            t.append(f"{sp.done:,.0f}/{sp.total:,.0f} {sp.unit}".ljust(22))
        else:
            t.append(f"{sp.done:,.0f} {sp.unit}".ljust(22))
        eta = sp.eta() if job.running and name == job.current_stage else None
        if eta is not None:
            t.append(f" ETA {fmt_duration(eta)}")
        if sp.message:
            t.append(f"  {sp.message[:60]}", style="dim")
        t.append("\n")
    if not job.stages and job.kind != JobKind.TRAIN:
        t.append("no progress reported yet\n" if job.running else "", style="dim")
    t.append(f"log: {short_path(job.log_path, root)}", style="dim")
    return t


def policy_line(jobs: JobManager) -> Text:
    """The job policy in force, what it means, and the key that switches it (fits 80 columns)."""
    t = Text()
    t.append("policy ", style="dim")
    t.append(str(jobs.settings.policy), style="bold")
    if jobs.settings.policy == JobPolicy.SHARE:
        t.append(": jobs run together, the cores split between them (ctrl+g: queue)", style="dim")
    else:
        t.append(": one CPU job at a time, the others wait (ctrl+g: share)", style="dim")
    if jobs.settings_error:
        t.append(f"\n{jobs.settings_error}", style="red")
    return t


class JobsScreen(BaseScreen):
    MODE = "jobs"
    TITLE_TEXT = "Jobs"
    BINDINGS = [
        Binding("ctrl+t", "cancel", "Cancel job", tooltip="SIGTERM, then SIGKILL after a timeout; queued: remove"),
        Binding("ctrl+l", "clear", "Clear finished", tooltip="forget finished jobs (their logs stay on disk)"),
        Binding("ctrl+g", "policy", "Policy", tooltip="share the cores between jobs, or queue them"),
        Binding("enter", "open_run", "Open run", show=False, tooltip="show a training job on the Train screen"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None
        self._order: list[str] = []
        self._log_key: tuple = ()

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="jobs-main"):
            yield Static("", id="jobs-policy")
            yield DataTable(id="jobs-table", cursor_type="row")
            with Horizontal(id="job-detail"):
                yield Static("", id="job-stages")
                yield Log(id="job-log", max_lines=400, auto_scroll=True)
            yield Static("", id="jobs-empty")

    def on_mount(self) -> None:
        t = self.query_one("#jobs-table", DataTable)
        for c in COLUMNS:
            t.add_column(c, key=c)
        self.set_interval(1.0, self._tick)
        self.refresh_jobs()
        t.focus()

    def on_screen_resume(self) -> None:
        self.refresh_jobs()

    def on_jobs_changed(self, _: JobsChanged) -> None:
        self.refresh_jobs()

    def _tick(self) -> None:
        if self.is_current and self.controller.running_jobs():
            self.refresh_jobs()

    def refresh_jobs(self) -> None:
        jobs = self.controller.jobs.ordered()
        progress = self.controller.job_progress
        now = time.time()
        t = self.query_one("#jobs-table", DataTable)
        order = [j.id for j in jobs]
        if order != self._order:
            self._order = order
            t.clear()
            for j in jobs:
                t.add_row(*job_cells(j, now, progress), key=j.id)
            if self.selected in order:
                t.move_cursor(row=order.index(self.selected))
            elif order:
                self.selected = order[0]
                t.move_cursor(row=0)
        else:
            for j in jobs:
                for col, val in zip(COLUMNS, job_cells(j, now, progress)):
                    t.update_cell(j.id, col, val)
        self.query_one("#jobs-policy", Static).update(policy_line(self.controller.jobs))
        self.query_one("#jobs-empty", Static).update(
            "" if jobs else "No jobs yet. Jobs start from the Datasets (F2) and Train (F4) screens.")
        self._show_detail()

    @on(DataTable.RowHighlighted, "#jobs-table")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.selected:
            self.selected = event.row_key.value
            self._show_detail()

    @on(DataTable.RowSelected, "#jobs-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    def _job(self) -> Job | None:
        return self.controller.jobs.jobs.get(self.selected or "")

    def _show_detail(self) -> None:
        job = self._job()
        stages = self.query_one("#job-stages", Static)
        log = self.query_one("#job-log", Log)
        if job is None:
            stages.update("")
            if self._log_key:
                log.clear()
                self._log_key = ()
            return
        stages.update(stage_lines(job, time.time(), self.controller, self.controller.ws.root))
        key, lines = self.controller.job_log(job)
        if key != self._log_key:
            same_job = self._log_key[:1] == (job.id,)
            self._log_key = key
            if same_job and len(lines) < TAIL_LINES:     # the tail only grew: append the new lines
                new = lines[log.line_count:]
                if new:
                    log.write_lines(new)
            else:
                log.clear()
                log.write_lines(lines)

    def action_cancel(self) -> None:
        job = self._job()
        if job is None:
            self.error("no job selected")
            return
        self.notify(self.controller.cancel(job), timeout=5)
        self.refresh_jobs()

    def action_policy(self) -> None:
        """Switch the job policy: share (together, cores split) or queue (one CPU job at a time)."""
        message = self.controller.toggle_policy()
        if "could not be saved" in message:
            self.error(message)
        else:
            self.notify(message, timeout=3)
        self.refresh_jobs()

    def action_clear(self) -> None:
        n = self.controller.forget_finished()
        self.notify(f"cleared {n} finished job(s); their logs stay in {short_path(self.controller.ws.logs_dir)}",
                    timeout=3)
        self.refresh_jobs()

    def action_open_run(self) -> None:
        job = self._job()
        if job is None or job.kind != JobKind.TRAIN or not job.run_id:
            return
        if self.controller.open_run(job.run_id) is not None:
            self.app.call_later(self.app.action_show, "train")  # type: ignore[attr-defined]
