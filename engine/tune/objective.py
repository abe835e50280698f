"""One trial = one ordinary training run (`engine.train.loop.fit`): it is listed by `sessrec runs`
and the app like any other, and its run id is the trial's `run_id` user attribute. The trial's
value is the chosen validation metric of the run's best epoch. The test split is never read
(`fit(..., evaluate_test=False)`).

GNN trials report the metric after every epoch; when the pruner says so the run ends as `stopped`
(reason `pruned`) and the trial as PRUNED. Baselines have no epochs: one evaluation on validation.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optuna

from engine.core.errors import InputError
from engine.core.progress import ProgressFn
from engine.core.schema import ModelKind, RunStatus, StopReason
from engine.core.workspace import Workspace
from engine.models.registry import get_spec
from engine.runs.store import new_run_id
from engine.train.loop import StopFlag, fit
from engine.train.recorder import RunFailedError
from engine.tune.setup import TuneSetup
from engine.tune.spaces import Dist


class TrialFailed(Exception):
    """A trial that cannot give a value (a refused combination, a failed run); the study goes on."""


class PruneHook:
    """`fit`'s per-epoch hook: reports the epoch's validation metric to the trial and stops the
    run when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, val: Mapping[str, Any]) -> str | None:
        value = (val.get("metrics") or {}).get(self.metric)
        if value is None:
            return None
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            return StopReason.PRUNED.value
        return None


class Objective:
    def __init__(self, ws: Workspace, setup: TuneSetup, space: Mapping[str, Dist], stop: StopFlag,
                 log: Callable[[str], None] | None = None, progress: ProgressFn | None = None,
                 tracking: str | None = None, study: str | None = None) -> None:
        self.ws, self.setup, self.space, self.stop = ws, setup, dict(space), stop
        self.tracking, self.study = tracking, study        # each trial's run logged to MLflow too
        self.log = log or (lambda m: None)
        self.progress = progress
        self.gnn = get_spec(setup.model).kind == ModelKind.GNN

    def __call__(self, trial: optuna.Trial) -> float:
        if self.stop.requested:
            raise KeyboardInterrupt
        sampled = {name: dist.suggest(trial, name) for name, dist in self.space.items()}
        try:
            cfg = self.setup.train_config(sampled)
        except InputError as e:                     # e.g. hidden not divisible by heads
            trial.set_user_attr("error", str(e))
            raise TrialFailed(str(e)) from None
        run_id = new_run_id(self.setup.model, self.ws.run_ids())
        trial.set_user_attr("run_id", run_id)
        hook = PruneHook(trial, self.setup.metric) if self.gnn else None
        n = trial.number
        try:
            final = fit(cfg, self.ws, run_id=run_id, stop=self.stop, progress=self.progress, on_epoch=hook,
                        evaluate_test=False, log=lambda m: self.log(f"trial {n}: {m}"), tracking=self.tracking,
                        tracking_tags={"sessrec.study": str(self.study or ""), "sessrec.trial": str(n)})
        except RunFailedError as e:
            trial.set_user_attr("error", e.event.error)
            raise TrialFailed(e.event.error) from None
        status = final.get("status")
        if hook is not None and hook.pruned_at is not None:
            trial.set_user_attr("pruned_at", hook.pruned_at)
            raise optuna.TrialPruned(f"pruned after epoch {hook.pruned_at}")
        if status == RunStatus.STOPPED:              # Ctrl-C / SIGTERM: the trial fails, the study ends
            trial.set_user_attr("error", f"stopped ({final.get('reason')})")
            raise KeyboardInterrupt
        value = (final.get("best_val") or {}).get(self.setup.metric)
        if value is None:
            trial.set_user_attr("error", f"run {run_id} has no validation {self.setup.metric}")
            raise TrialFailed(f"run {run_id} has no validation {self.setup.metric}")
        return float(value)
