"""The fit loop: AdamW with warm-up and decay, clipping, bf16 autocast on CUDA, validation every epoch,
early stopping on val Recall@10, atomic `best.pt` / `last.pt`, exact resume, clean stop on SIGTERM.

Test is evaluated once, at the end, with the best epoch's weights. Baselines go through the same
function: they are fitted (no epochs), checkpointed and evaluated by the same evaluator.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from engine.atomic import write_json
from engine.config import TrainConfig, from_dict, to_dict
from engine.data.artifacts import DatasetArtifacts, load_dataset
from engine.device import device_info, gpu_memory_mb, resolve_device
from engine.errors import InputError
from engine.evaluate import evaluate
from engine.models.registry import build_model, get_spec, resolve_params
from engine.train.batches import BatchBuilder, SessionStore, make_examples
from engine.train.checkpoint import BEST, LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state, versions
from engine.train.events import RunLog
from engine.train.losses import compute_loss
from engine.workspace import Workspace, check_name

CONFIG_FILE = "config.json"


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


def new_run_id(ws: Workspace, cfg: TrainConfig) -> str:
    from engine.runs import new_run_id as make_id
    run_id = make_id(cfg.model, (p.name for p in ws.runs_dir.iterdir()) if ws.runs_dir.exists() else ())
    return check_name(run_id, "run id")


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    # warm-up never takes more than a tenth of the run (small datasets have few steps in all)
    warm = min(cfg.warmup_steps, total_steps // 10)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)   # no decay on biases and norms
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for the whole update on CUDA (fewer launches per step), and ~4x faster
    # than the per-tensor loop on CPU
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Shuffle order of an epoch, from its own generator: resuming mid-epoch replays it exactly."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


@dataclass
class Trainer:
    """State shared by the steps of one run (also used by the throughput benchmark)."""

    cfg: TrainConfig
    model: torch.nn.Module
    builder: BatchBuilder
    examples: torch.Tensor           # long [N, 2] on the device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    item_freq: torch.Tensor          # float [V+1] train counts (sampled softmax logQ)
    device: torch.device

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.examples) / self.cfg.batch_size))

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimisation step on examples[idx]; returns the loss (a device tensor, no sync)."""
        batch = self.builder(self.examples[idx])
        autocast = self.device.type == "cuda" and self.cfg.bf16
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = compute_loss(self.model, batch, self.cfg.loss, self.cfg.negatives, self.item_freq)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


def build_trainer(cfg: TrainConfig, data: DatasetArtifacts, device: torch.device) -> Trainer:
    model = build_model(cfg.model, cfg.model_params, data).to(device)
    if cfg.compile:
        # compile the module in place: score() and forward_with_items() go through the compiled forward
        model.compile(dynamic=True)
    ex = make_examples(data.train, "last" if cfg.examples == "last" else "prefixes", drop_unknown_targets=True)
    if len(ex) == 0:
        raise InputError(f"dataset {data.name!r} has no training examples (sessions of length >= 2)")
    graph_mode = getattr(model, "graph_mode", "transitions")
    builder = BatchBuilder(SessionStore(data.train, device), data.n_items, graph_mode, data.graph)
    opt = make_optimizer(model, cfg)
    steps = max(1, math.ceil(len(ex) / cfg.batch_size)) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps))
    freq = torch.as_tensor(np.concatenate([[0], data.items.train_counts]).astype(np.float32), device=device)
    return Trainer(cfg, model, builder, torch.as_tensor(ex, device=device), opt, sched, freq, device)


class StoppedDuringEval(Exception):
    """A stop was requested while an evaluation pass ran (checked per batch)."""


def _eval(model: Any, data: DatasetArtifacts, split: str, protocol: str, cfg: TrainConfig,
          device: torch.device, progress=None, stop: StopFlag | None = None) -> dict:
    graph_mode = getattr(model, "graph_mode", "none")
    builder = BatchBuilder(SessionStore(data.split(split), device), data.n_items,
                           graph_mode if graph_mode in ("transitions", "cooc") else "none", data.graph)
    pop = np.concatenate([[0], data.items.train_counts])
    autocast = device.type == "cuda" and cfg.bf16

    def report(p):  # evaluation passes on large data take a while: honour a stop between batches
        if stop is not None and stop.requested:
            raise StoppedDuringEval
        if progress is not None:
            progress(p)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        res = evaluate(model, builder, data.split(split), protocol=protocol,
                       batch_size=cfg.eval_batch_size, popularity=pop, progress=report)
    res["split"] = split
    return res


def _suggest_oom(cfg: TrainConfig) -> str:
    tips = [f"--batch-size {max(1, cfg.batch_size // 2)}"]
    if cfg.loss == "ce":
        tips.append("--loss sampled (no [batch x items] logits)")
    return "retry with " + " or ".join(tips)


def _payload(tr: Trainer, data: DatasetArtifacts, cfg: TrainConfig, epoch: int, batch_in_epoch: int,
             step: int, early: dict) -> dict:
    model = getattr(tr.model, "_orig_mod", tr.model)
    return {
        "config": to_dict(cfg), "dataset": data.name, "n_items": data.n_items,
        "item_fingerprint": data.items.fingerprint(),
        "pe_shape": list(data.pe.shape) if data.pe is not None else None,
        "model": model.state_dict(), "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict(), "epoch": epoch, "batch_in_epoch": batch_in_epoch,
        "step": step, "rng": rng_state(), "early_stopping": early,
    }


def fit(cfg: TrainConfig | None, ws: Workspace, run_id: str | None = None, resume: bool = False,
        epochs: int | None = None, device: str | None = None, to_stdout: bool = False,
        log: Callable[[str], None] | None = None, stop: StopFlag | None = None, progress=None) -> dict:
    """Train (or fit a baseline), evaluate, write the run folder. Returns the final event.

    With `resume`, the run's saved config is used; only `epochs` (to extend a run) and `device`
    may change.
    """
    log = log or (lambda m: None)
    stop = stop or StopFlag()
    if resume:
        if run_id is None:
            raise InputError("--resume needs the run id")
        run_dir = ws.run(run_id).root
        if not (run_dir / CONFIG_FILE).exists():
            raise InputError(f"run {run_id!r} not found in {ws.runs_dir}")
        saved = from_dict(TrainConfig, json.loads((run_dir / CONFIG_FILE).read_text())["train"])
        cfg = replace(saved, epochs=epochs or saved.epochs, device=device or saved.device)
    else:
        if cfg is None:
            raise InputError("a new run needs a TrainConfig")
        if epochs or device:
            cfg = replace(cfg, epochs=epochs or cfg.epochs, device=device or cfg.device)
    device = resolve_device(cfg.device)
    spec = get_spec(cfg.model)
    if not resume:
        cfg = replace(cfg, model_params=resolve_params(cfg.model, cfg.model_params, device.type))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    data = load_dataset(ws, cfg.dataset, with_pe=True)
    if not resume:
        run_id = run_id or new_run_id(ws, cfg)
        run_dir = ws.run(run_id).root
        run_dir.mkdir(parents=True, exist_ok=False)
        write_json(run_dir / CONFIG_FILE, {
            "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "train": to_dict(cfg),
            "kind": spec.kind, "dataset": {"name": data.name, "n_items": data.n_items,
                                           "item_fingerprint": data.items.fingerprint()},
            "versions": versions(), "host": socket.gethostname()})
    assert run_id is not None
    runlog = RunLog(run_dir, run_id, to_stdout=to_stdout)
    t_start = time.perf_counter()
    try:
        if spec.kind == "baseline":
            return _fit_baseline(cfg, data, device, run_dir, runlog, log, t_start, progress)
        return _fit_gnn(cfg, data, device, run_dir, runlog, log, stop, resume, t_start, progress)
    except KeyboardInterrupt:
        runlog.emit("run_failed", error="interrupted before a checkpoint could be written",
                    error_kind="interrupted", batch_size=cfg.batch_size, suggestion="", traceback="")
        raise
    except torch.cuda.OutOfMemoryError as e:
        ev = runlog.emit("run_failed", error=f"CUDA out of memory at batch size {cfg.batch_size}: {e}"[:500],
                         error_kind="cuda_oom", batch_size=cfg.batch_size, suggestion=_suggest_oom(cfg),
                         traceback=traceback.format_exc(limit=4))
        raise RunFailed(ev) from e
    except Exception as e:
        kind = "cuda_error" if "CUDA" in str(e) else "error"
        ev = runlog.emit("run_failed", error=f"{type(e).__name__}: {e}", error_kind=kind,
                         batch_size=cfg.batch_size, suggestion="", traceback=traceback.format_exc(limit=8))
        raise RunFailed(ev) from e
    finally:
        runlog.close()


class RunFailed(Exception):
    def __init__(self, event: dict) -> None:
        super().__init__(event.get("error", "run failed"))
        self.event = event


def _start_event(runlog: RunLog, cfg: TrainConfig, data: DatasetArtifacts, device: torch.device,
                 model: Any, **extra: Any) -> None:
    n_params = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else 0
    runlog.emit("run_started", config=to_dict(cfg), dataset=data.name, model=cfg.model, device=str(device),
                device_info=device_info(device), n_params=n_params, pid=os.getpid(),
                n_items=data.n_items, oracle=data.oracle, **extra)


def _fit_baseline(cfg, data, device, run_dir, runlog, log, t_start, progress) -> dict:
    seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.model_params, data)
    if hasattr(model, "to"):
        model = model.to(device)
    _start_event(runlog, cfg, data, device, model, train_examples=0, steps_per_epoch=0, epochs=0,
                 resumed_from=None)
    save_checkpoint(run_dir / BEST, {"config": to_dict(cfg), "dataset": data.name, "n_items": data.n_items,
                                     "item_fingerprint": data.items.fingerprint(),
                                     "pe_shape": None, "model": None, "epoch": 0, "step": 0})
    runlog.emit("checkpoint", kind="best", path=str(run_dir / BEST), epoch=0, step=0)
    log(f"{cfg.model}: evaluating on val and test")
    val = {p: _eval(model, data, "val", p, cfg, device, progress) for p in ("last", "prefixes")}
    runlog.emit("epoch", epoch=1, train_loss=None, epoch_seconds=0.0, val=val[cfg.val_protocol],
                best_epoch=1, best_value=val[cfg.val_protocol]["metrics"]["recall@10"], improved=True,
                patience_left=cfg.patience)
    test = {p: _eval(model, data, "test", p, cfg, device, progress) for p in ("last", "prefixes")}
    return runlog.emit("run_finished", status="completed", best_epoch=1,
                       best_val=val[cfg.val_protocol]["metrics"], val=val, test=test,
                       seconds=round(time.perf_counter() - t_start, 2), epochs_run=0)


def _fit_gnn(cfg, data, device, run_dir, runlog, log, stop, resume, t_start, progress) -> dict:
    seed_everything(cfg.seed)
    tr = build_trainer(cfg, data, device)
    early = {"best_value": -1.0, "best_epoch": 0, "bad_epochs": 0}
    start_epoch, start_batch, step = 0, 0, 0
    resumed_from = None
    if resume:
        ckpt = load_checkpoint(run_dir / LAST, map_location=device)
        if ckpt["item_fingerprint"] != data.items.fingerprint():
            raise InputError(f"dataset {data.name!r} was rebuilt with another item index since this run "
                             f"started; resume is not possible (start a new run)")
        getattr(tr.model, "_orig_mod", tr.model).load_state_dict(ckpt["model"])
        tr.optimizer.load_state_dict(ckpt["optimizer"])
        tr.scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        early = ckpt["early_stopping"]
        set_rng_state(ckpt["rng"])
        resumed_from = {"epoch": start_epoch, "batch_in_epoch": start_batch, "step": step}
        log(f"resuming {runlog.run_id} at epoch {start_epoch + 1}, batch {start_batch}")
    spe = tr.steps_per_epoch
    _start_event(runlog, cfg, data, device, tr.model, train_examples=len(tr.examples), steps_per_epoch=spe,
                 epochs=cfg.epochs, resumed_from=resumed_from)
    log(f"{cfg.model} on {data.name}: {len(tr.examples):,} examples, {spe} steps/epoch, device {device}")
    status = "completed"
    for epoch in range(start_epoch, cfg.epochs):
        tr.model.train()
        perm = epoch_permutation(len(tr.examples), cfg.seed, epoch, device)
        t_epoch = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        loss_n, window_sum, window_n, window_t, window_ex = 0, torch.zeros((), device=device), 0, time.perf_counter(), 0
        first = start_batch if epoch == start_epoch else 0
        for bi in range(first, spe):
            idx = perm[bi * cfg.batch_size:(bi + 1) * cfg.batch_size]
            loss = tr.step(idx)
            step += 1
            loss_sum += loss
            window_sum += loss
            loss_n += 1
            window_n += 1
            window_ex += len(idx)
            if runlog.step_due() or bi == spe - 1:
                now = time.perf_counter()
                eps = window_ex / max(1e-9, now - window_t)
                left = (spe - bi - 1) * cfg.batch_size + (cfg.epochs - epoch - 1) * len(tr.examples)
                runlog.emit("step", epoch=epoch + 1, step=step, epoch_step=bi + 1, steps_per_epoch=spe,
                            loss=round(float(window_sum) / window_n, 5),
                            lr=tr.scheduler.get_last_lr()[0], examples_per_s=round(eps, 1),
                            eta_s=round(left / max(eps, 1e-9), 1), gpu_mem_mb=gpu_memory_mb(device))
                window_sum, window_n, window_t, window_ex = torch.zeros((), device=device), 0, now, 0
            if stop.requested:
                save_checkpoint(run_dir / LAST, _payload(tr, data, cfg, epoch, bi + 1, step, early))
                runlog.emit("checkpoint", kind="last", path=str(run_dir / LAST), epoch=epoch + 1, step=step)
                log(f"stopped ({stop.signal}) at epoch {epoch + 1}, step {step}; resume with --resume")
                return runlog.emit("run_finished", status="stopped", reason=stop.signal,
                                   best_epoch=early["best_epoch"] or None, best_val=early.get("best_metrics"),
                                   seconds=round(time.perf_counter() - t_start, 2), epochs_run=epoch)
        train_loss = float(loss_sum) / max(1, loss_n)
        epoch_seconds = time.perf_counter() - t_epoch
        tr.model.eval()
        try:
            val = _eval(tr.model, data, "val", cfg.val_protocol, cfg, device, progress, stop)
        except StoppedDuringEval:
            # the epoch's training is complete: resume starts with its validation
            save_checkpoint(run_dir / LAST, _payload(tr, data, cfg, epoch, spe, step, early))
            runlog.emit("checkpoint", kind="last", path=str(run_dir / LAST), epoch=epoch + 1, step=step)
            log(f"stopped ({stop.signal}) during validation of epoch {epoch + 1}; resume with --resume")
            return runlog.emit("run_finished", status="stopped", reason=stop.signal,
                               best_epoch=early["best_epoch"] or None, best_val=early.get("best_metrics"),
                               seconds=round(time.perf_counter() - t_start, 2), epochs_run=epoch)
        value = val["metrics"]["recall@10"]
        improved = value > early["best_value"] + 1e-12
        if improved:
            early.update(best_value=value, best_epoch=epoch + 1, bad_epochs=0, best_metrics=val["metrics"])
        else:
            early["bad_epochs"] += 1
        runlog.emit("epoch", epoch=epoch + 1, train_loss=round(train_loss, 5),
                    epoch_seconds=round(epoch_seconds, 2), val=val, best_epoch=early["best_epoch"],
                    best_value=early["best_value"], improved=improved,
                    patience_left=cfg.patience - early["bad_epochs"])
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.4f}, val recall@10 {value:.4f}"
            f"{' (best)' if improved else ''}, {epoch_seconds:.1f}s")
        payload = _payload(tr, data, cfg, epoch + 1, 0, step, early)
        if improved:
            save_checkpoint(run_dir / BEST, payload)
            runlog.emit("checkpoint", kind="best", path=str(run_dir / BEST), epoch=epoch + 1, step=step)
        save_checkpoint(run_dir / LAST, payload)
        runlog.emit("checkpoint", kind="last", path=str(run_dir / LAST), epoch=epoch + 1, step=step)
        if early["bad_epochs"] >= cfg.patience:
            status = "early_stopped"
            log(f"early stop: no val improvement for {cfg.patience} epochs")
            break
        if stop.requested:
            return runlog.emit("run_finished", status="stopped", reason=stop.signal,
                               best_epoch=early["best_epoch"], best_val=early.get("best_metrics"),
                               seconds=round(time.perf_counter() - t_start, 2), epochs_run=epoch + 1)
    # test once, with the best epoch's weights
    best = load_checkpoint(run_dir / BEST, map_location=device)
    getattr(tr.model, "_orig_mod", tr.model).load_state_dict(best["model"])
    tr.model.eval()
    log("evaluating the best epoch on val and test (both protocols)")
    try:
        val = {p: _eval(tr.model, data, "val", p, cfg, device, progress, stop) for p in ("last", "prefixes")}
        test = {p: _eval(tr.model, data, "test", p, cfg, device, progress, stop) for p in ("last", "prefixes")}
    except StoppedDuringEval:
        log(f"stopped ({stop.signal}) during the final evaluation; `sessrec eval {runlog.run_id}` runs it")
        return runlog.emit("run_finished", status="stopped", reason=stop.signal,
                           best_epoch=early["best_epoch"] or None, best_val=early.get("best_metrics"),
                           seconds=round(time.perf_counter() - t_start, 2), epochs_run=cfg.epochs)
    return runlog.emit("run_finished", status=status, best_epoch=early["best_epoch"],
                       best_val=early.get("best_metrics"), val=val, test=test,
                       seconds=round(time.perf_counter() - t_start, 2), epochs_run=cfg.epochs)
