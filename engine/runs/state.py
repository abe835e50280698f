"""THE reducer of run events: a run's state (status, progress, curves, best and test metrics) folded
from its typed events. The CLI (`sessrec runs`), the benchmarks and every screen of the app read runs
through this one fold, so they cannot disagree about a run.

Liveness is not decided here (events cannot say a process died): `engine.runs.store` applies the
one rule, the run lock, and calls `mark_interrupted` when a running run's lock is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.core.schema import ErrorKind, ModelKind, RunStatus
from engine.runs.events import Checkpoint, Epoch, Resumed, RunEvent, RunFailed, RunFinished, RunStarted, Step

INTERRUPTED_ERROR = "the process ended without a final event (killed, or the machine restarted)"


@dataclass
class RunState:
    run_id: str
    status: RunStatus = RunStatus.STARTING
    # from config.json (the store fills these; events repeat most of them)
    model: str | None = None
    dataset: str | None = None
    kind: str = ModelKind.GNN.value
    created: str = ""
    config: dict = field(default_factory=dict)
    # from run_started
    device: str | None = None
    device_info: dict = field(default_factory=dict)
    n_params: int | None = None
    train_examples: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    pid: int | None = None
    started: float | None = None
    ended: float | None = None
    seconds: float | None = None
    # curves
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epoch_x: list[int] = field(default_factory=list)
    val_recall: list[float | None] = field(default_factory=list)
    val_ndcg: list[float | None] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    last_step: Step | None = None
    resumes: int = 0
    # results
    epochs_run: int = 0
    best_epoch: int | None = None
    best_value: float | None = None
    best_val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)           # protocol -> metrics
    checkpoints: dict = field(default_factory=dict)    # best | last -> epoch
    # failures
    reason: str | None = None     # why a stopped run stopped (a signal, or "pruned" by tuning)
    error: str | None = None
    error_kind: str | None = None
    suggestion: str | None = None
    traceback: str | None = None
    skipped_lines: int = 0       # lines of events.jsonl that are not events (reported, not fatal)
    version: int = 0             # bumped on every change (views redraw when it moves)

    # ---- folding -------------------------------------------------------------------------------
    def apply(self, ev: RunEvent) -> bool:
        """Fold one event in; False for events that change nothing shown."""
        if isinstance(ev, RunStarted):
            self.status = RunStatus.RUNNING
            self.model = ev.model or self.model
            self.dataset = ev.dataset or self.dataset
            if ev.kind:
                self.kind = ev.kind
            elif ev.steps_per_epoch == 0 and ev.epochs == 0:    # events of older versions
                self.kind = ModelKind.BASELINE.value
            self.device, self.device_info = ev.device, ev.device_info or {}
            self.n_params, self.train_examples = ev.n_params, ev.train_examples
            self.steps_per_epoch, self.epochs = ev.steps_per_epoch, ev.epochs
            self.pid, self.started, self.ended, self.reason = ev.pid, ev.time, None, None
            self.error = self.error_kind = self.suggestion = self.traceback = None
        elif isinstance(ev, Resumed):
            self.resumes += 1
        elif isinstance(ev, Step):
            if ev.loss is not None:
                self.steps.append(ev.step)
                self.losses.append(float(ev.loss))
            self.last_step = ev
        elif isinstance(ev, Epoch):
            m = (ev.val or {}).get("metrics") or {}
            if self.epoch_x and ev.epoch <= self.epoch_x[-1]:
                # an epoch redone after a kill: its new result replaces the lost one
                keep = next(i for i, x in enumerate(self.epoch_x) if x >= ev.epoch)
                del self.epoch_x[keep:], self.val_recall[keep:], self.val_ndcg[keep:]
            self.epoch_x.append(ev.epoch)
            self.val_recall.append(m.get("recall@10"))
            self.val_ndcg.append(m.get("ndcg@10"))
            if ev.epoch_seconds:
                self.epoch_seconds.append(float(ev.epoch_seconds))
            self.epochs_run = ev.epoch
            self.best_epoch, self.best_value = ev.best_epoch, ev.best_value
            if ev.improved:
                self.best_val = m
        elif isinstance(ev, Checkpoint):
            self.checkpoints[ev.kind] = ev.epoch
        elif isinstance(ev, RunFinished):
            self.status = _status(ev.status, RunStatus.COMPLETED)
            self.reason = ev.reason
            self.ended, self.seconds = ev.time, ev.seconds
            self.epochs_run = max(self.epochs_run, ev.epochs_run or 0)
            if ev.best_val:
                self.best_val = ev.best_val
            if ev.best_epoch is not None:
                self.best_epoch = ev.best_epoch
            if ev.test:
                self.test = {p: (r or {}).get("metrics", {}) for p, r in ev.test.items()}
        elif isinstance(ev, RunFailed):
            self.status = RunStatus.INTERRUPTED if ev.error_kind == ErrorKind.INTERRUPTED else RunStatus.FAILED
            self.ended = ev.time
            self.error, self.error_kind = ev.error or "failed", ev.error_kind
            self.suggestion, self.traceback = ev.suggestion or None, ev.traceback or None
        else:
            return False
        self.version += 1
        return True

    def apply_all(self, events: Iterable[RunEvent]) -> bool:
        changed = False
        for ev in events:
            changed |= self.apply(ev)
        return changed

    def mark_interrupted(self, why: str = INTERRUPTED_ERROR) -> None:
        """The run's process is gone without a final event."""
        self.status, self.error, self.error_kind = RunStatus.INTERRUPTED, why, ErrorKind.INTERRUPTED.value
        self.version += 1

    def fail(self, error: str, kind: str = ErrorKind.ERROR.value) -> None:
        """The process ended before it could write a final event (it crashed before its first, or
        was killed): what its parent knows of it."""
        if not self.finished or self.status == RunStatus.INTERRUPTED:
            self.status, self.error, self.error_kind = RunStatus.FAILED, error, kind
            self.version += 1

    # ---- views ---------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return RunStatus(self.status).finished

    @property
    def is_fitted(self) -> bool:
        """Baselines and hybrids: fitted and evaluated at once, no epochs."""
        return self.kind != ModelKind.GNN

    def metric(self, where: str, name: str = "recall@10") -> float | None:
        """`where`: val | test_last | test_prefixes."""
        if where == "val":
            return self.best_val.get(name)
        return (self.test.get(where.split("_", 1)[1]) or {}).get(name)

    def progress(self) -> tuple[float | None, str]:
        """(fraction of the run done, a one-line description)."""
        if self.is_fitted:
            return (1.0 if self.finished else None), f"fitting and evaluating the {self.kind}"
        ev = self.last_step
        if ev is None or not self.steps_per_epoch or not self.epochs:
            return None, ("loading data and building the model" if self.status == RunStatus.RUNNING
                          else str(self.status))
        done = (ev.epoch - 1) * self.steps_per_epoch + ev.epoch_step
        frac = min(1.0, done / (self.steps_per_epoch * self.epochs))
        return frac, f"epoch {ev.epoch}/{self.epochs}, step {ev.epoch_step}/{self.steps_per_epoch}"

    def eta(self) -> float | None:
        return None if self.finished or self.last_step is None else self.last_step.eta_s

    @property
    def refit_of(self) -> str | None:
        """The selection run whose validation chose this refit's epochs (None: not a refit)."""
        return self.config.get("refit_of") or None

    def summary(self) -> dict[str, Any]:
        """The JSON form of `sessrec runs --events jsonl`."""
        return {"run_id": self.run_id, "model": self.model, "dataset": self.dataset, "kind": self.kind,
                "status": str(self.status), "created": self.created, "epochs_run": self.epochs_run,
                "epochs": self.epochs, "best_epoch": self.best_epoch, "best_val": self.best_val,
                "test": self.test, "seconds": self.seconds, "device": self.device, "reason": self.reason,
                "error": self.error, "refit_of": self.refit_of,
                "skipped_lines": self.skipped_lines}


def _status(value: str | None, default: RunStatus) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        return default
