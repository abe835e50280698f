"""Studies: what a study tunes (`TuneSetup`, stored with it), where it lives (one SQLite database
in the workspace, `Workspace.studies_db`), and how it is opened, resumed and read back.

A study is resumable: the same command continues it until its trial count is reached. While a
process runs trials of a study it holds the study's lock (`Workspace.study_lock`), so a trial left
RUNNING by a process that died (kill -9) is found and marked failed by the next one that opens it.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.locks import FolderLock, lock_holder
from engine.core.schema import ModelKind
from engine.core.workspace import Workspace
from engine.models.registry import get_spec
from engine.tune.setup import TuneSetup

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PRUNE_FROM_EPOCH = 3           # GNN trials are never pruned before this epoch

optuna.logging.set_verbosity(optuna.logging.ERROR)     # our own line per trial says it


# ---- storage ------------------------------------------------------------------------------------
def storage(ws: Workspace, create: bool = True) -> optuna.storages.RDBStorage:
    if create:
        ws.tuning_dir.mkdir(parents=True, exist_ok=True)
    elif not ws.studies_db.exists():
        raise InputError(f"no studies yet in {ws.studies_db} (sessrec tune --dataset D --model M --trials N)")
    # Opening the storage creates its tables and stamps the schema version when they are missing;
    # two processes doing that at once (a tuning job creating the database while the app polls it)
    # fail with "table alembic_version already exists", so opening is serialised across processes.
    with FolderLock(ws.tuning_dir / "studies.db.open.lock", "the study database is being opened by {who}",
                    what="study database lock").acquire(timeout=60):
        # the app reads while a tuning job writes: wait for SQLite's lock rather than fail at once
        return optuna.storages.RDBStorage(f"sqlite:///{ws.studies_db}",
                                          engine_kwargs={"connect_args": {"timeout": 30}})


def study_names(ws: Workspace) -> list[str]:
    if not ws.studies_db.exists():
        return []
    return sorted(optuna.get_all_study_names(storage(ws, create=False)))


def load(ws: Workspace, name: str) -> optuna.Study:
    """A stored study, to read (no sampler state matters)."""
    names = study_names(ws)
    if name not in names:
        raise InputError(f"no study {name!r} in {ws.studies_db}; "
                         + (f"studies: {', '.join(names)}" if names else "no studies yet"))
    return optuna.load_study(study_name=name, storage=storage(ws, create=False))


def setup_of(study: optuna.Study) -> TuneSetup | None:
    d = study.user_attrs.get("setup")
    return TuneSetup.from_dict(d) if isinstance(d, dict) else None


def lock(ws: Workspace, name: str) -> FolderLock:
    ws.tuning_dir.mkdir(parents=True, exist_ok=True)
    return FolderLock(ws.study_lock(name), f"study {name!r} is being tuned by {{who}}; wait for it or stop it",
                      what="study lock")


def running_pid(ws: Workspace, name: str) -> int | None:
    """The process running trials of `name`, if any."""
    return lock_holder(ws.study_lock(name))


def open_for_trials(ws: Workspace, name: str, setup: TuneSetup) -> optuna.Study:
    """Create the study or continue it (same setup, or an error naming what differs), with a
    seeded TPE sampler and, for GNNs, a median pruner. The caller holds the study's lock."""
    store = storage(ws)
    study = optuna.create_study(study_name=name, storage=store, direction="maximize", load_if_exists=True)
    saved = setup_of(study)
    if saved is None:
        study.set_user_attr("setup", setup.to_dict())
        # the first trial is the untuned model (its defaults: for the kNNs session-rec's tuned values),
        # so a study never reports a configuration worse on validation than not tuning at all
        study.enqueue_trial(default_params(setup), user_attrs={"defaults": True})
    elif saved.identity() != setup.identity():
        old, new = saved.identity(), setup.identity()
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
        raise InputError(f"study {name!r} was started with other settings ({'; '.join(diff)}); "
                         f"repeat its command or choose another --study")
    fail_stale(study)
    # seeded by the trials so far too: a continued study does not replay its first samples
    sampler = optuna.samplers.TPESampler(seed=setup.seed + len(study.trials))
    gnn = get_spec(setup.model).kind == ModelKind.GNN
    # no pruning before epoch 3: the first epochs measure the warm-up and the learning rate more
    # than the configuration (on YooChoose-100k a 1-epoch cut pruned trials of lr 1e-3 and 2.5e-3,
    # the range the best runs use)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=PRUNE_FROM_EPOCH) if gnn
              else optuna.pruners.NopPruner())
    return optuna.load_study(study_name=name, storage=store, sampler=sampler, pruner=pruner)


def default_params(setup: TuneSetup) -> dict[str, Any]:
    """The model's and training's defaults for the fields `setup` tunes."""
    from engine.tune.spaces import space_for
    defaults = {**TrainConfig().to_dict(), **get_spec(setup.model).resolve().to_dict()}
    return {name: defaults[name] for name in space_for(setup.model, sorted(setup.fixed))}


def fail_stale(study: optuna.Study) -> list[int]:
    """Trials still RUNNING in a study whose lock we hold: their process died. Marked failed."""
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "error", "its process ended while it ran")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return [t.number for t in stale]


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


# ---- reading a study ----------------------------------------------------------------------------
def trial_row(t: FrozenTrial) -> dict[str, Any]:
    dur = t.duration.total_seconds() if t.duration is not None else None
    return {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params),
            "run_id": t.user_attrs.get("run_id"), "seconds": round(dur, 2) if dur is not None else None,
            "pruned_at": t.user_attrs.get("pruned_at"), "error": t.user_attrs.get("error"),
            "intermediate": {int(k): v for k, v in t.intermediate_values.items()}}


def report(ws: Workspace, study: optuna.Study, top: int = 5) -> dict[str, Any]:
    """The JSON form of a study: setup, trials, the best ones and the command for the best."""
    setup = setup_of(study)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    ranked = sorted(done, key=lambda t: (-t.value, t.number))
    best = ranked[0] if ranked else None
    return {
        "study": study.study_name, "setup": setup.to_dict() if setup else None,
        "database": str(ws.studies_db), "running_pid": running_pid(ws, study.study_name),
        "counts": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        "trials": [trial_row(t) for t in trials],
        "top": [trial_row(t) for t in ranked[:top]],
        "best": None if best is None else {
            **trial_row(best), "command": setup.train_command(best.params) if setup else None},
    }


def summaries(ws: Workspace) -> list[dict[str, Any]]:
    """One line per stored study (`sessrec tune --show`, the app's list)."""
    if not ws.studies_db.exists():
        return []
    store = storage(ws, create=False)
    out = []
    for s in optuna.get_all_study_summaries(store, include_best_trial=True):
        setup = s.user_attrs.get("setup") or {}
        trials = store.get_all_trials(store.get_study_id_from_name(s.study_name), deepcopy=False, states=FINISHED)
        out.append({"study": s.study_name, "model": setup.get("model"), "dataset": setup.get("dataset"),
                    "metric": setup.get("metric"), "trials": s.n_trials, "finished": len(trials),
                    "best": s.best_trial.value if s.best_trial is not None else None,
                    "running_pid": running_pid(ws, s.study_name),
                    "started": s.datetime_start.isoformat() if s.datetime_start else None})
    return sorted(out, key=lambda r: r["study"])
