"""The controller's part that follows runs: what is known of each run (the store's state, or the
placeholder of a run this app just started), their logs, stopping them, reading their new events a
few times a second, and what happens when a training job ends (its run's final word, a notice).

A mixin of `tui.controller.Controller`, which owns the state it uses (`ws`, `runs`, `jobs`,
`current_run`, `_placeholders`, `post`, `notice`, ...)."""

from __future__ import annotations

from typing import Any

from engine.core.schema import ErrorKind, JobKind, JobStatus, RunStatus
from engine.core.workspace import Workspace
from engine.jobs import Job, JobManager
from engine.runs import RunState, RunStore, lock_holder
from engine.runs.events import RunFailed, append_event
from tui.messages import RunsChanged, RunUpdated


class RunTracking:
    # owned by the Controller
    ws: Workspace
    runs: RunStore
    jobs: JobManager
    current_run: str | None
    _placeholders: dict[str, RunState]
    _recommenders: dict[str, Any]

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


    def follow_runs(self) -> None:
        """Read the new events of the runs being watched; tell the screens what changed."""
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

    def can_recommend(self, run_id: str) -> bool:
        """The run has a checkpoint to load (best, else last)."""
        run = self.ws.run(run_id)
        return run.best.exists() or run.last.exists()

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
