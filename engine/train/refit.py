"""The papers' protocol as one call: choose on validation, train again on every training session,
test once.

1. Selection: the run of `cfg` on its dataset, early stopping on validation picking the epoch; the
   test split is never read (`evaluate_test=False`).
2. Refit: the same config on the dataset's refit twin (`engine.data.refit`: validation joined to
   train, its items in the vocabulary, the same test sessions), for the chosen number of epochs on
   the selection run's learning-rate schedule (`schedule_epochs`), keeping the last epoch; tested
   once. Its config names the selection run (`refit_of`).
Baselines have no epochs: their selection run only records their validation score (what picks the
best baseline), and the refit fits them on the twin with the hyperparameters given (e.g. chosen by
`sessrec tune` on validation).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.progress import ProgressFn
from engine.core.schema import ModelKind, RunStatus
from engine.core.workspace import Workspace
from engine.data.manifest import Dataset
from engine.data.refit import is_refit, refit_dataset
from engine.models.registry import get_spec
from engine.train.loop import StopFlag, fit

SELECTED = (RunStatus.COMPLETED.value, RunStatus.EARLY_STOPPED.value)


def refit_config(selection: TrainConfig, selection_run: str, best_epoch: int, dataset: str) -> TrainConfig:
    """The refit of a finished selection run: its config on `dataset` for `best_epoch` epochs on the
    selection's schedule, the last epoch kept (nothing to validate on). A baseline (no epochs) keeps
    its config and moves to `dataset`."""
    if not get_spec(selection.model).trains:
        return replace(selection, dataset=dataset, refit_of=selection_run)
    return replace(selection, dataset=dataset, epochs=best_epoch,
                   schedule_epochs=selection.schedule_epochs or selection.epochs, early_stopping=False,
                   refit_of=selection_run)


def fit_refit(cfg: TrainConfig, ws: Workspace, run_id: str | None = None,
              log: Callable[[str], None] | None = None, stop: StopFlag | None = None,
              progress: ProgressFn | None = None) -> dict:
    """Selection run, then refit run; returns the refit's final event as a dict, with the selection
    run's id and final event under `selection`."""
    log = log or (lambda m: None)
    stop = stop or StopFlag()
    spec = get_spec(cfg.model)
    if spec.kind == ModelKind.HYBRID:
        raise InputError("a hybrid chooses its weight on validation, which a refit dataset has none of: refit "
                         "its GNN run and its baseline, then mix them on the original dataset")
    ds = Dataset.load(ws, cfg.dataset)
    if is_refit(ds):
        raise InputError(f"dataset {ds.name!r} is already a refit dataset (no validation); pass the dataset "
                         f"it was made from")
    log(f"refit: building {ds.name}'s refit twin (validation joined to train) ...")
    twin = refit_dataset(ds, progress=progress)
    what = "the epoch" if spec.trains else "nothing (a baseline): its validation score, for comparison"
    log(f"refit 1/2: choosing {what} on {ds.name}'s validation (the test split is not read)")
    selection = fit(cfg, ws, log=log, stop=stop, progress=progress, evaluate_test=False)
    if selection.get("status") not in SELECTED or not selection.get("best_epoch"):
        sel = selection.get("run_id")
        raise InputError(f"refit: the selection run {sel} ended {selection.get('status')} without a chosen "
                         f"epoch; continue it with --resume {sel} --no-test (validation only), then refit it "
                         f"with --refit-from {sel}")
    rcfg = refit_config(cfg, selection["run_id"], int(selection["best_epoch"]), twin.name)
    log(f"refit 2/2: {cfg.model} on {twin.name}" + (f", {rcfg.epochs} epoch(s) chosen on validation by "
                                                     f"{selection['run_id']}" if spec.trains else ""))
    final = fit(rcfg, ws, run_id=run_id, log=log, stop=stop, progress=progress)
    final["refit"] = True
    final["selection"] = selection
    return final


def refit_from(ws: Workspace, selection_run: str, run_id: str | None = None,
               log: Callable[[str], None] | None = None, stop: StopFlag | None = None,
               progress: ProgressFn | None = None) -> dict:
    """Refit a finished selection run (e.g. one trained with `--nproc`, or a tuning trial)."""
    from engine.runs import read_run
    st = read_run(ws, selection_run)
    if st.status not in SELECTED or not st.best_epoch:
        raise InputError(f"run {selection_run}: {st.status}, no epoch chosen on validation to refit with")
    cfg = TrainConfig.from_dict(st.config)
    if cfg.refit_of:
        raise InputError(f"run {selection_run} is itself a refit (of {cfg.refit_of})")
    twin = refit_dataset(Dataset.load(ws, cfg.dataset), progress=progress)
    final = fit(refit_config(cfg, selection_run, int(st.best_epoch), twin.name), ws, run_id=run_id, log=log,
                stop=stop, progress=progress)
    final["refit"] = True
    return final
