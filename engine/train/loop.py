"""A run from start to end: `fit` prepares a new or resumed run (everything that can be refused is
refused before the run folder exists or before anything is appended to it), holds the run's lock,
then trains epoch by epoch with validation, early stopping, atomic `best.pt` / `last.pt`, exact
resume and a clean stop on SIGTERM; test is evaluated once, with the best epoch's weights.
Baselines go through the same path: fitted (no epochs), checkpointed, evaluated by the same evaluator.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from engine.core.alloc import reuse_freed_memory
from engine.core.atomic import TMP_PREFIX, clean_temp, write_json
from engine.core.config import TrainConfig
from engine.core.device import device_info, gpu_memory_mb, resolve_device
from engine.core.errors import InputError
from engine.core.locks import RunLock
from engine.core.progress import ProgressFn
from engine.core.schema import ErrorKind, ModelKind, Protocol, RunStatus, Split
from engine.core.threads import process_budget, set_compute_threads
from engine.core.workspace import RunDir, Workspace, check_name
from engine.data.artifacts import DatasetArtifacts, load_dataset
from engine.data.item_meta import FeatureSpec
from engine.models.checkpoint import load_checkpoint
from engine.models.registry import ModelSpec, build_model, get_spec, resolve_params
from engine.runs.events import RunFailed
from engine.runs.store import new_run_id
from engine.train.checkpoint import rng_state, set_rng_state, versions
from engine.train.early_stopping import EarlyStopping
from engine.train.loss_choice import resolve_loss
from engine.train.optim import epoch_permutation, seed_everything
from engine.train.recorder import RunFailedError, RunRecorder
from engine.train.trainer import StoppedDuringEval, Trainer, build_trainer, evaluate_split

PROTOCOLS = tuple(Protocol)
# called after each validated epoch with (epoch, its validation result); a non-empty string stops the
# run there as `stopped` with that reason (hyperparameter tuning prunes runs this way)
EpochHook = Callable[[int, dict], "str | None"]


class StopFlag:
    """Set by SIGTERM/SIGINT (or the app); the loop checks it after every step."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None

    def request(self, why: str = "stop") -> None:
        self.requested = True
        self.signal = why

    def install(self) -> None:
        def handler(signum: int, frame: object) -> None:
            self.request(signal.Signals(signum).name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:   # not the main thread
                pass


@dataclass
class _Prepared:
    """A run that is ready to start: validated config, data, device, its folder and lock."""

    cfg: TrainConfig
    spec: ModelSpec
    data: DatasetArtifacts
    device: torch.device
    run: RunDir
    lock: RunLock
    checkpoint: dict | None = None      # last.pt of a resumed run
    resumed: bool = False               # --resume (from `checkpoint`, or from the start without one)
    created: bool = False               # the folder was made for this run
    loss_choice: str | None = None      # how `--loss auto` was resolved (a new run)
    warm: Any | None = None             # --warm-start: the older run (engine.train.warm_start.WarmSource)


_INIT_TEXT = {"new_item_vector": "from their features (the older model's cold-start vectors)",
              "category_mean": "as their category's mean vector (fresh without one)"}


def _suggest_oom(cfg: TrainConfig) -> str:
    tips = [f"--batch-size {max(1, cfg.batch_size // 2)}"]
    if cfg.loss == "ce":
        tips.append("--loss sampled (no [batch x items] logits)")
    return "retry with " + " or ".join(tips)


def fit(cfg: TrainConfig | None, ws: Workspace, run_id: str | None = None, resume: bool = False,
        epochs: int | None = None, device: str | None = None, log: Callable[[str], None] | None = None,
        stop: StopFlag | None = None, progress: ProgressFn | None = None, on_epoch: EpochHook | None = None,
        evaluate_test: bool = True, tracking: str | None = None, tracking_tags: dict[str, str] | None = None) -> dict:
    """Train (or fit a baseline), evaluate, write the run folder; returns the final event as a dict.

    With `resume`, the run's saved config is used; only `epochs` (to extend a run) and `device`
    may change. `on_epoch`: see `EpochHook`. `evaluate_test=False`: the test split is never read
    (tuning chooses on validation only); the run ends without test metrics. `tracking`: also log
    the run to MLflow (`mlflow`, `mlflow:URI`; default: the workspace's settings; engine.tracking),
    with `tracking_tags` (a tuning trial's study and number).
    """
    from engine.tracking import tracker_for
    tracker = tracker_for(ws, tracking, tracking_tags, **({"warn": log} if log else {}))
    log = log or (lambda m: None)
    stop = stop or StopFlag()
    prep = _prepare_resume(ws, run_id, epochs, device) if resume else _prepare_new(cfg, ws, run_id, epochs, device)
    return run_prepared(prep, lambda run: RunRecorder(run, tracker), lambda rec: _Loop(prep, rec, log, stop, progress, on_epoch,
                                                            evaluate_test),
                        log, progress, evaluate_test)


def run_prepared(prep: "_Prepared", recorder: Callable[[RunDir], RunRecorder],
                 loop: Callable[[RunRecorder], "_Loop"], log: Callable[[str], None],
                 progress: ProgressFn | None, evaluate_test: bool = True) -> dict:
    """Run a prepared run to its end (its lock is released here); a failure is recorded as the
    run's `run_failed` and raised as `RunFailedError`. `recorder` and `loop` build the event writer
    and the epoch loop (data-parallel workers bring their own)."""
    if prep.loss_choice:
        log(prep.loss_choice)
    rec: RunRecorder | None = None
    try:
        try:
            rec = recorder(prep.run)
            if prep.spec.trains:
                # per-step [batch, catalogue] tensors: no page faults. Not for the kNN baselines and
                # hybrids: their candidate arrays change size every batch, and a heap that never gives
                # memory back fragmented to 14 GB choosing a hybrid's weight on YooChoose 1/64
                reuse_freed_memory()
            if prep.cfg.num_threads:             # the user's choice overrides the app's share
                set_compute_threads(prep.cfg.num_threads)
            else:
                process_budget().apply(with_torch=True)
            if not prep.spec.trains:
                final = _fit_baseline(prep, rec, log, progress, evaluate_test)
            else:
                final = loop(rec).run()
        except KeyboardInterrupt as e:
            if rec is not None and _started(prep.run):      # else it never started: removed below
                rec.fail(e, ErrorKind.INTERRUPTED, prep.cfg.batch_size)
            raise
        except torch.cuda.OutOfMemoryError as e:
            raise _failed(rec, prep, e, ErrorKind.CUDA_OOM, _suggest_oom(prep.cfg)) from e
        except Exception as e:
            if prep.created and not _started(prep.run):
                raise                  # it never started: the folder is removed below
            kind = getattr(e, "error_kind", None) or (ErrorKind.CUDA_ERROR if "CUDA" in str(e) else ErrorKind.ERROR)
            raise _failed(rec, prep, e, kind) from e
    except BaseException:
        if prep.created and not _started(prep.run):
            shutil.rmtree(prep.run.root, ignore_errors=True)     # a run that never started blocks no id
        raise
    finally:
        if rec is not None:
            rec.close()
        prep.lock.release()
    return final.to_dict()


def _started(run: RunDir) -> bool:
    try:
        return run.events.stat().st_size > 0
    except OSError:
        return False


def _failed(rec: RunRecorder | None, prep: _Prepared, exc: BaseException, kind: ErrorKind,
            suggestion: str = "") -> RunFailedError:
    if rec is None:
        ev = RunFailed(error=str(exc), error_kind=kind.value)
    else:
        ev = rec.fail(exc, kind, prep.cfg.batch_size, suggestion)
    return RunFailedError(ev)


# ---- preparing a run ----------------------------------------------------------------------------
def _load_data(ws: Workspace, cfg: TrainConfig, spec: ModelSpec) -> DatasetArtifacts:
    return load_dataset(ws, cfg.dataset, stages=spec.stages(cfg.model_params))


def _prepare_new(cfg: TrainConfig | None, ws: Workspace, run_id: str | None, epochs: int | None,
                 device: str | None) -> _Prepared:
    if cfg is None:
        raise InputError("a new run needs a TrainConfig")
    if epochs or device:
        cfg = replace(cfg, epochs=epochs or cfg.epochs, device=device or cfg.device)
    spec = get_spec(cfg.model)
    dev = resolve_device(cfg.device)
    # complete and check the hyperparameters (CPU preset off CUDA): refused before any folder exists
    cfg = replace(cfg, model_params=spec.resolve(cfg.model_params, dev.type).to_dict())
    data = _load_data(ws, cfg, spec)
    warm = _warm_source(ws, cfg, spec) if cfg.warm_start else None
    # baselines have no loss: their config keeps what was asked (a rerun then matches it)
    choice = resolve_loss(cfg.loss, cfg.batch_size, data.n_items, str(dev)) if spec.trains else None
    if choice is not None:
        cfg = replace(cfg, loss=choice.loss)
    if spec.kind == ModelKind.GNN and len(data.val) == 0 and cfg.early_stopping:
        # the epoch (early stopping) and the kept weights are chosen on validation, never on test
        raise InputError(f"dataset {data.name!r} has no validation sessions (val_ratio "
                         f"{data.config.val_ratio}); a GNN chooses its epoch on validation: rebuild it "
                         f"with `sessrec data build {data.name} --val-ratio 0.1`, or refit for a fixed "
                         f"number of epochs chosen before: --no-early-stopping --epochs N")
    existing = ws.run_ids() if ws.runs_dir.exists() else []
    run = ws.run(check_name(run_id, "run id") if run_id else new_run_id(cfg.model, existing))
    lock = _claim_folder(run)
    try:
        write_json(run.config, {
            "run_id": run.run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "train": cfg.to_dict(),
            "kind": spec.kind.value, "dataset": {"name": data.name, "n_items": data.n_items,
                                                 "item_fingerprint": data.items.fingerprint()},
            "versions": versions(), "loss_choice": choice.to_dict() if choice else None})
    except BaseException:
        shutil.rmtree(run.root, ignore_errors=True)      # ours (we hold its lock), and without a config
        lock.release()
        raise
    return _Prepared(cfg, spec, data, dev, run, lock, created=True,
                     loss_choice=choice.message if choice else None, warm=warm)


def _warm_source(ws: Workspace, cfg: TrainConfig, spec: ModelSpec) -> Any:
    """The weights (best checkpoint, else last) and item index of the run `cfg.warm_start`; refused
    unless it is a GNN run of the same model and hyperparameters."""
    if spec.kind != ModelKind.GNN:
        raise InputError(f"--warm-start: {cfg.model} has no weights to start from (GNN runs only)")
    old = ws.existing_run(cfg.warm_start)
    ckpt = load_checkpoint(old.served_checkpoint("best"))
    saved = TrainConfig.from_dict(ckpt["config"])
    # a hyperparameter the old run's config lacks (added since) holds its default, as `cfg`'s does
    old_params = resolve_params(saved.model, saved.model_params, resolve_device(cfg.device).type) \
        if saved.model == cfg.model else saved.model_params
    if saved.model != cfg.model or old_params != cfg.model_params:
        changed = sorted(k for k in {**old_params, **cfg.model_params}
                         if old_params.get(k) != cfg.model_params.get(k))
        raise InputError(f"--warm-start {old.run_id}: it is a {saved.model} with other hyperparameters "
                         f"({', '.join(changed) or 'model'}); warm start needs the same model and hyperparameters")
    items = load_dataset(ws, saved.dataset, stages=("items",), item_fingerprint=ckpt["item_fingerprint"]).items
    from engine.train.warm_start import WarmSource
    spec_d = ckpt.get("feature_spec")
    return WarmSource(old.run_id, ckpt["model"], items, FeatureSpec.from_dict(spec_d) if spec_d else None)


def _claim_folder(run: RunDir) -> RunLock:
    """Make a new run's folder and take its lock; InputError when the id is taken.

    A folder holding nothing but its lock file (and temp files) is a start killed before it wrote its
    config (a SIGKILL in its first second): no run, nothing saved, so its id is free again. Checked
    again under the lock, which a start that is still alive holds (then the lock names it).
    """
    try:
        run.root.mkdir(parents=True)
    except FileExistsError:
        if not _unstarted(run):
            raise InputError(f"run id {run.run_id!r} is taken ({run.root}); choose another --run-id, "
                             f"or continue that run with --resume {run.run_id}") from None
    lock = RunLock(run.lock, run.run_id).acquire()
    if not _unstarted(run):                       # another start got there first and wrote its config
        lock.release()
        raise InputError(f"run id {run.run_id!r} is taken; choose another --run-id")
    clean_temp(run.root)                          # a config write the kill cut short
    return lock


def _unstarted(run: RunDir) -> bool:
    """The folder holds no run: only a lock file and temp files (or nothing)."""
    try:
        return all(p.name == run.lock.name or p.name.startswith(TMP_PREFIX) for p in run.root.iterdir())
    except OSError:
        return False


def _prepare_resume(ws: Workspace, run_id: str | None, epochs: int | None, device: str | None) -> _Prepared:
    if run_id is None:
        raise InputError("--resume needs the run id")
    run = ws.run(run_id)
    if not run.exists:
        raise InputError(f"run {run_id!r} not found in {ws.runs_dir}")
    lock = RunLock(run.lock, run_id).acquire()       # a second resume of a live run stops here
    try:
        try:
            saved = TrainConfig.from_dict(json.loads(run.config.read_text())["train"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{run.config}: not a readable run config ({type(e).__name__}: {e})") from None
        cfg = replace(saved, epochs=epochs or saved.epochs, device=device or saved.device)
        spec = get_spec(cfg.model)
        clean_temp(run.root)                         # leftovers of a checkpoint write that was killed
        dev = resolve_device(cfg.device)
        ckpt = None
        if spec.kind == ModelKind.GNN and not _never_checkpointed(run):
            # read before anything is appended: a corrupt last.pt is an error, not a failed run
            ckpt = load_checkpoint(run.last, map_location=dev)
        data = _load_data(ws, cfg, spec)
        # without a checkpoint the run starts again from its first step, on the data it started with
        trained_on = ckpt["item_fingerprint"] if ckpt is not None else _config_fingerprint(run)
        if trained_on is not None and trained_on != data.items.fingerprint():
            raise InputError(f"dataset {data.name!r} was rebuilt with another item index since this run "
                             f"started; resume is not possible (start a new run)")
        # killed before its first checkpoint: a warm start is made again from the older run
        warm = _warm_source(ws, cfg, spec) if cfg.warm_start and ckpt is None and spec.trains else None
    except BaseException:
        lock.release()
        raise
    return _Prepared(cfg, spec, data, dev, run, lock, checkpoint=ckpt, resumed=True, warm=warm)


def _never_checkpointed(run: RunDir) -> bool:
    """A run killed before its first checkpoint (no checkpoint file, none in its events): resumed,
    it starts from its first step. One that wrote a checkpoint since lost never restarts silently."""
    from engine.runs.events import Checkpoint, read_events
    return (not run.last.exists() and not run.best.exists()
            and not any(isinstance(e, Checkpoint) for e in read_events(run.events)))


def _config_fingerprint(run: RunDir) -> str | None:
    try:
        return json.loads(run.config.read_text())["dataset"]["item_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- baselines ----------------------------------------------------------------------------------
def _start_fields(prep: _Prepared, model: Any, **extra: Any) -> dict[str, Any]:
    n_params = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else 0
    return dict(config=prep.cfg.to_dict(), dataset=prep.data.name, model=prep.cfg.model,
                kind=prep.spec.kind.value, device=str(prep.device), device_info=device_info(prep.device),
                n_params=n_params, n_items=prep.data.n_items, oracle=prep.data.oracle, **extra)


def _payload_base(prep: _Prepared) -> dict[str, Any]:
    d = prep.data
    features = d.item_features() if getattr(prep.cfg, "model_params", {}).get("item_features") else None
    return {"config": prep.cfg.to_dict(), "dataset": d.name, "n_items": d.n_items,
            "item_fingerprint": d.items.fingerprint(),
            "pe_shape": list(d.pe.shape) if d.pe is not None else None,
            "feature_spec": features.spec.to_dict() if features is not None else None}


@contextlib.contextmanager
def _signals_interrupt() -> Any:
    """SIGTERM / SIGINT raise KeyboardInterrupt inside the block, then the previous handlers (the
    StopFlag's) return: for work that never looks at the stop flag (a baseline's fit and
    evaluation, a hybrid's weight choice), which otherwise ran on until killed."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:       # not the main thread: nothing to change
            pass
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _fit_baseline(prep: _Prepared, rec: RunRecorder, log: Callable[[str], None],
                  progress: ProgressFn | None, evaluate_test: bool = True) -> Any:
    with _signals_interrupt():       # a stop ends a baseline's run as interrupted (nothing to resume)
        return _fit_baseline_body(prep, rec, log, progress, evaluate_test)


def _fit_baseline_body(prep: _Prepared, rec: RunRecorder, log: Callable[[str], None],
                       progress: ProgressFn | None, evaluate_test: bool) -> Any:
    cfg, data, device = prep.cfg, prep.data, prep.device
    seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.model_params, data).to(device)
    rec.started(**_start_fields(prep, model, train_examples=0, steps_per_epoch=0, epochs=0))
    payload = _payload_base(prep)
    fitted = getattr(model, "fitted_params", None)
    if fitted:
        # what fitting chose (a hybrid's weight): the checkpoint rebuilds with it, without refitting
        log(f"{cfg.model}: chosen on validation: {fitted}")
        payload["config"] = {**payload["config"],
                             "model_params": {**payload["config"]["model_params"], **fitted}}
    rec.checkpoint("best", {**payload, "model": None, "epoch": 0, "step": 0}, epoch=0, step=0)
    log(f"{cfg.model}: evaluating on val" + (" and test" if evaluate_test else ""))
    val = {p: evaluate_split(model, data, Split.VAL, p, cfg, device, progress) for p in PROTOCOLS}
    best = val[cfg.val_protocol]
    rec.epoch(epoch=1, train_loss=None, epoch_seconds=0.0, val=best, best_epoch=1,
              best_value=best["metrics"]["recall@10"], improved=True, patience_left=cfg.patience)
    test = ({p: evaluate_split(model, data, Split.TEST, p, cfg, device, progress,
                               ranks_path=prep.run.test_ranks(p)) for p in PROTOCOLS}
            if evaluate_test else None)
    return rec.finish(RunStatus.COMPLETED, best_epoch=1, best_val=best["metrics"], val=val, test=test,
                      epochs_run=0)


# ---- GNNs ---------------------------------------------------------------------------------------
class _Loop:
    """The epochs of one GNN run (new or resumed): train, validate, checkpoint, stop early."""

    def __init__(self, prep: _Prepared, rec: RunRecorder, log: Callable[[str], None], stop: StopFlag,
                 progress: ProgressFn | None, on_epoch: EpochHook | None = None,
                 evaluate_test: bool = True) -> None:
        self.prep, self.rec, self.log, self.stop, self.progress = prep, rec, log, stop, progress
        self.on_epoch, self.evaluate_test = on_epoch, evaluate_test
        self.hook_reason: str | None = None      # what `on_epoch` said when it stopped the run
        self.cfg, self.data, self.device = prep.cfg, prep.data, prep.device
        seed_everything(self.cfg.seed)
        # a feature model encodes items as it was trained (a resumed run: its checkpoint's spec) or
        # as the run it warm-starts from did (category rows mean the same categories)
        spec_d = (prep.checkpoint or {}).get("feature_spec")
        spec = FeatureSpec.from_dict(spec_d) if spec_d else (prep.warm.feature_spec if prep.warm else None)
        if spec is not None:
            self.data.use_feature_spec(spec)
        self.tr: Trainer = build_trainer(self.cfg, self.data, self.device)
        self.warm: dict | None = None
        if prep.warm is not None and prep.checkpoint is None:      # a resume from last.pt has its weights
            from engine.train.warm_start import new_item_vectors_for, warm_start
            w = prep.warm
            vectors = new_item_vectors_for(self.tr.model, w.state, self.data.meta or self.data.current_meta())
            ws_info = warm_start(self.tr.model, w.state, w.items, self.data.items, self.cfg.warm_start, vectors)
            self.warm = ws_info.to_dict()
        self.early = EarlyStopping(self.cfg.patience)
        self.epoch, self.batch, self.step = 0, 0, 0          # position: completed epochs, batches, steps
        self.loss_sum, self.loss_n = 0.0, 0                   # this epoch's training loss so far
        self.epoch_seconds = 0.0
        self.epochs_run = 0
        # the app may change this job's share of the cores while it runs (another job starts or
        # ends): one cheap check per step, unless the user fixed the thread count
        self.budget = None if self.cfg.num_threads else process_budget()

    # ---- checkpoints -----------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {**_payload_base(self.prep), **self.tr.state(), "epoch": self.epoch,
                "batch_in_epoch": self.batch, "step": self.step, "epoch_loss": [self.loss_sum, self.loss_n],
                "rng": rng_state(), "early_stopping": self.early.to_dict()}

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.tr.load_state(ckpt)
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        self.early = EarlyStopping.from_dict(ckpt.get("early_stopping") or {}, self.cfg.patience)
        self.loss_sum, self.loss_n = (ckpt.get("epoch_loss") or [0.0, 0]) if self.batch else (0.0, 0)
        self.epochs_run = self.epoch
        set_rng_state(ckpt["rng"])

    def _stopped(self, where: str) -> Any:
        self.rec.checkpoint("last", self._payload(), epoch=self.epoch + 1, step=self.step)
        self.log(f"stopped ({self.stop.signal}) {where}; resume with --resume {self.prep.run.run_id}")
        return self._finish(RunStatus.STOPPED, reason=self.stop.signal)

    def _finish(self, status: RunStatus, **fields: Any) -> Any:
        return self.rec.finish(status, best_epoch=self.early.best_epoch or None,
                               best_val=self.early.best_metrics or None, epochs_run=self.epochs_run, **fields)

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> Any:
        cfg, tr = self.cfg, self.tr
        ckpt = self.prep.checkpoint
        if ckpt is not None:
            self._restore(ckpt)
            self.rec.resumed(self.epoch, self.batch, self.step, int(ckpt.get("step_offset") or 0))
            self.log(f"resuming {self.prep.run.run_id} at epoch {self.epoch + 1}, batch {self.batch}")
        elif self.prep.resumed:         # killed before its first checkpoint: again from the start
            self.rec.resumed(0, 0, 0, 0)
            self.log(f"resuming {self.prep.run.run_id} from its first step (it wrote no checkpoint)")
        spe = tr.steps_per_epoch
        self.rec.started(**_start_fields(self.prep, tr.model, train_examples=len(tr.examples),
                                         steps_per_epoch=spe, epochs=cfg.epochs,
                                         resumed_from=({"epoch": self.epoch, "batch_in_epoch": self.batch,
                                                        "step": self.step} if self.prep.resumed else None),
                                         warm_start=self.warm))
        if self.warm:
            w = self.warm
            self.log(f"warm start from {w['from_run']}: {w['known_items']:,} known items keep their vectors, "
                     f"{w['new_items']:,} new ones start {_INIT_TEXT.get(w['new_item_init'], w['new_item_init'])}")
        self.log(f"{cfg.model} on {self.data.name}: {len(tr.examples):,} examples, {spe} steps/epoch, "
                 f"device {self.device}")
        status = RunStatus.COMPLETED
        while self.epoch < cfg.epochs:
            if self._train_epoch() == "stopped":
                return self._stopped(f"at epoch {self.epoch + 1}, step {self.step}")
            try:
                self._validate()
            except StoppedDuringEval:        # the epoch is trained: a resume starts with its validation
                return self._stopped(f"during validation of epoch {self.epoch + 1}")
            if self.hook_reason:             # last.pt of this epoch is written: resumable
                self.log(f"stopped after epoch {self.epoch}: {self.hook_reason}")
                return self._finish(RunStatus.STOPPED, reason=self.hook_reason)
            if cfg.early_stopping and self.early.should_stop:
                status = RunStatus.EARLY_STOPPED
                self.log(f"early stop: no val improvement for {cfg.patience} epochs")
                break
            if self.stop.requested:
                return self._finish(RunStatus.STOPPED, reason=self.stop.signal)
        return self._test(status)

    def _train_epoch(self) -> str:
        cfg, tr, rec = self.cfg, self.tr, self.rec
        spe = tr.steps_per_epoch
        tr.model.train()
        perm = epoch_permutation(len(tr.examples), cfg.seed, self.epoch, self.device)
        t0 = time.perf_counter()
        epoch_sum = torch.zeros((), device=self.device)
        window_sum, window_n, window_t, window_ex = torch.zeros((), device=self.device), 0, time.perf_counter(), 0
        n_before = self.loss_n
        for bi in range(self.batch, spe):
            idx = perm[bi * cfg.batch_size:(bi + 1) * cfg.batch_size]
            loss = self._batch_step(idx)
            if self.budget is not None:
                self.budget.poll()
            loss, due, stopping = self._agree(loss, rec.step_due(bi == spe - 1))
            self.step += 1
            self.batch = bi + 1
            epoch_sum += loss
            window_sum += loss
            window_n += 1
            window_ex += len(idx)
            self.loss_n += 1
            if due:
                now = time.perf_counter()
                eps = window_ex / max(1e-9, now - window_t)
                left = (spe - bi - 1) * cfg.batch_size + (cfg.epochs - self.epoch - 1) * len(tr.examples)
                rec.step(self.step, epoch=self.epoch + 1, epoch_step=bi + 1, steps_per_epoch=spe,
                         loss=round(float(window_sum) / window_n, 5), lr=tr.scheduler.get_last_lr()[0],
                         examples_per_s=round(eps, 1), eta_s=round(left / max(eps, 1e-9), 1),
                         gpu_mem_mb=gpu_memory_mb(self.device))
                window_sum, window_n, window_t, window_ex = torch.zeros((), device=self.device), 0, now, 0
            if stopping:
                self.loss_sum += float(epoch_sum)
                return "stopped"
        if self.loss_n > n_before:
            self.loss_sum += float(epoch_sum)
        self.epoch_seconds = time.perf_counter() - t0
        return "trained"

    # the two places a data-parallel worker differs (engine.train.parallel.DistLoop)
    def _batch_step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the examples `idx` of the batch; the loss (not synced to the host)."""
        return self.tr.step(idx)

    def _agree(self, loss: torch.Tensor, due: bool) -> tuple[Any, bool, bool]:
        """(the batch's loss, log this step?, stop now?): one process decides alone."""
        return loss, due, self.stop.requested

    def _evaluate(self, split: str, protocol: str, ranks_path: Any = None) -> dict:
        return evaluate_split(self.tr.model, self.data, split, protocol, self.cfg, self.device, self.progress,
                              self.stop, ranks_path=ranks_path)

    def _load_best(self) -> None:
        best = load_checkpoint(self.prep.run.best, map_location=self.device)
        self.tr.model.load_state_dict(best["model"])

    def _validate(self) -> None:
        cfg, tr = self.cfg, self.tr
        tr.model.eval()
        val = self._evaluate(Split.VAL, cfg.val_protocol)
        value = val["metrics"]["recall@10"]
        epoch = self.epoch + 1
        if cfg.early_stopping:
            improved = self.early.update(epoch, value, val["metrics"])
        else:
            improved = self.early.keep_last(epoch, value, val["metrics"])
        train_loss = self.loss_sum / max(1, self.loss_n)
        # the epoch is complete: the position moves to the next one before the checkpoints, so a
        # resume starts there (and `best.pt` exists before any event calls this epoch the best)
        self.epoch, self.batch, self.loss_sum, self.loss_n = epoch, 0, 0.0, 0
        self.epochs_run = epoch
        payload = self._payload()
        if improved:
            self.rec.checkpoint("best", payload, epoch=epoch, step=self.step)
        self.rec.checkpoint("last", payload, epoch=epoch, step=self.step)
        self.rec.epoch(epoch=epoch, train_loss=round(train_loss, 5),
                       epoch_seconds=round(self.epoch_seconds, 2), val=val,
                       best_epoch=self.early.best_epoch, best_value=self.early.best_value, improved=improved,
                       patience_left=self.early.patience_left)
        shown = "-" if value is None else f"{value:.4f}"          # no validation split: a refit
        self.log(f"epoch {epoch}/{cfg.epochs}: loss {train_loss:.4f}, val recall@10 {shown}"
                 f"{' (best)' if improved and cfg.early_stopping else ''}, {self.epoch_seconds:.1f}s")
        if self.on_epoch is not None:
            self.hook_reason = self.on_epoch(epoch, val) or None

    def _test(self, status: RunStatus) -> Any:
        """Test once, with the best epoch's weights (both protocols, and val again for the record)."""
        if not self.evaluate_test:          # validation only (tuning): the epochs' results stand
            return self._finish(status)
        self._load_best()
        self.tr.model.eval()
        which = "best" if self.cfg.early_stopping else "last"
        self.log(f"evaluating the {which} epoch on " + ("val and test" if len(self.data.val) else "test")
                 + " (both protocols)")
        try:
            val = {p: self._evaluate(Split.VAL, p) for p in PROTOCOLS}
            test = {p: self._evaluate(Split.TEST, p, ranks_path=self.prep.run.test_ranks(p)) for p in PROTOCOLS}
        except StoppedDuringEval:
            self.log(f"stopped ({self.stop.signal}) during the final evaluation; "
                     f"`sessrec eval {self.prep.run.run_id}` runs it")
            return self._finish(RunStatus.STOPPED, reason=self.stop.signal)
        return self._finish(status, val=val, test=test)

