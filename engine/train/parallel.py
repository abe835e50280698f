"""Data-parallel training: one worker of a run started by torchrun (or `sessrec train --nproc N`).

Every worker builds the same model from the same seed and walks the same seeded permutation of the
epoch's examples; of each global batch of `batch_size` examples it trains on its contiguous part, so a
step of N workers sees exactly the examples of the one-process step. DistributedDataParallel
averages the gradients; each worker's loss is weighted by its share of the batch, so the averaged
gradient is the gradient of the global batch's mean loss even when the epoch's last batch does not
split evenly. Evaluation is sharded and gathered (`engine.evaluation.evaluate`, `shard=`): every worker gets
the result a single process gets.

Rank 0 prepares the run (folder, lock, config, checkpoint) exactly as a single process does and
sends it to the others; it alone writes events and checkpoints (with the unwrapped model's weights,
so any number of workers, or none, resumes them). The run's position is in global batches and
optimizer steps, which do not depend on the number of workers. A stop (SIGTERM/SIGINT on any worker)
is agreed on by all workers each step, so they stop together and rank 0 writes `last.pt`.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from engine.core.config import TrainConfig
from engine.core.device import resolve_device
from engine.core.errors import InputError, SessrecError
from engine.core.progress import ProgressFn
from engine.core.schema import ModelKind
from engine.core.workspace import RunDir, Workspace
from engine.data.artifacts import DatasetArtifacts
from engine.models.checkpoint import load_checkpoint
from engine.models.registry import get_spec
from engine.runs.events import RunEvent
from engine.tracking import Tracker, tracker_for
from engine.train.checkpoint import rng_state, set_rng_state
from engine.train.distributed import DistContext, WorkerLost, peer_failure, to_cpu
from engine.train.loop import StopFlag, _load_data, _Loop, _prepare_new, _prepare_resume, _Prepared, run_prepared
from engine.train.losses import compute_loss
from engine.train.recorder import RunRecorder


def check_world(cfg: TrainConfig, world: int, batch_field: str = "--batch-size",
                one_worker: str = "run it without --nproc") -> None:
    """What N workers can train: a GNN, with a global batch that splits evenly. The messages name
    the batch size and the way back to one worker as the caller's user sets them (the CLI's flags
    by default; the app's Train form passes its own words)."""
    spec = get_spec(cfg.model)
    if not spec.trains:
        raise InputError(f"{spec.kind} {cfg.model} has nothing to train in parallel; {one_worker}")
    if cfg.batch_size % world:
        lower = max(world, cfg.batch_size // world * world)
        raise InputError(f"{batch_field} {cfg.batch_size} is the global batch and must be divisible by the "
                         f"{world} workers (each takes {cfg.batch_size} / {world}); try {batch_field} {lower}")


class PeerError(Exception):
    """This worker stops because rank 0 refused the run (rank 0 says why): exit with `code`, quietly."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused by rank 0 (exit {code})")
        self.code = code


# ---- what workers other than rank 0 keep ---------------------------------------------------------
class _NullWriter:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def write(self, event: RunEvent) -> RunEvent:
        event.run_id, event.time = self.run_id, round(time.time(), 3)
        return event

    def step_due(self) -> bool:
        return False

    def close(self) -> None:
        pass


class NullRecorder(RunRecorder):
    """The recorder of workers other than rank 0: the same events, written nowhere."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.tracker = Tracker()               # rank 0 alone tracks the run (MLflow)
        self.writer = _NullWriter(run.run_id)  # type: ignore[assignment]
        self.t_start = time.perf_counter()
        self.step_offset = 0
        self.ended = None

    def resumed(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        pass

    def checkpoint(self, *args: Any, **kw: Any) -> None:
        pass


class _NoLock:
    def release(self) -> None:
        pass


class AgreedStop:
    """The stop every worker agrees on: a stop asked on any worker stops all at the same point.

    Reading `requested` is a collective (every worker reads it at the same places of the loop);
    `sync` agrees on the stop together with a step's loss and whether rank 0 logs the step.
    """

    def __init__(self, local: StopFlag, ctx: DistContext) -> None:
        self.local, self.ctx = local, ctx
        self._agreed = False
        self.signal: str | None = None

    @property
    def requested(self) -> bool:
        if not self._agreed:
            self.sync(0.0, False)
        return self._agreed

    def sync(self, loss: float, log_due: bool) -> tuple[float, bool, bool]:
        """One all-reduce: (sum of the workers' `loss`, any `log_due`, any stop asked)."""
        t = torch.tensor([1.0 if self.local.requested else 0.0, loss, 1.0 if log_due else 0.0],
                         dtype=torch.float64)
        self.ctx.all_reduce_sum(t)
        if t[0] > 0 and not self._agreed:
            self._agreed = True
            signals = self.ctx.all_gather_object(self.local.signal)     # who was asked, and how
            self.signal = next((s for s in signals if s), "stop")
        return float(t[1]), bool(t[2] > 0), self._agreed


class _LossOf(torch.nn.Module):
    """The model with its loss as `forward`: DDP hooks the gradients of whatever `forward` uses
    (`compute_loss` calls the model's other methods too: item tables, repeat logits)."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, item_freq: torch.Tensor) -> None:
        super().__init__()
        self.model, self.loss, self.negatives, self.item_freq = model, cfg.loss, cfg.negatives, item_freq

    def forward(self, batch: Any) -> torch.Tensor:
        return compute_loss(self.model, batch, self.loss, self.negatives, self.item_freq)


def _rank_seed(seed: int, rank: int, step: int) -> int:
    return (seed + 1) * 1_000_003 + rank * 7_919 + step


# ---- the loop -------------------------------------------------------------------------------------
class DistLoop(_Loop):
    """`_Loop` for one of N data-parallel workers."""

    def __init__(self, ctx: DistContext, prep: _Prepared, rec: RunRecorder, log: Callable[[str], None],
                 stop: AgreedStop, progress: ProgressFn | None, evaluate_test: bool = True) -> None:
        # same seed: the same initial weights
        super().__init__(prep, rec, log, stop, progress, evaluate_test=evaluate_test)
        self.ctx = ctx
        if ctx.rank:        # but each worker its own dropout, PE signs and negatives
            torch.manual_seed(_rank_seed(self.cfg.seed, ctx.rank, 0))
        unused = self._unused_parameters()
        # buffers (the PE table, neighbour lists) never change: no broadcast each step
        params = inspect.signature(DistributedDataParallel).parameters
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        self.ddp = DistributedDataParallel(
            _LossOf(self.tr.model, self.cfg, self.tr.item_freq),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=bool(unused), **no_sync)

    def _unused_parameters(self) -> list[str]:
        """Parameters this model and loss leave without a gradient (DDP must then look for them
        each step, which costs a graph traversal: only when needed). Found on two examples; the
        RNG is left as it was."""
        tr = self.tr
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            batch = tr.builder(tr.examples[:2])
            compute_loss(tr.model, batch, self.cfg.loss, self.cfg.negatives, tr.item_freq).backward()
            return [n for n, p in tr.model.named_parameters() if p.requires_grad and p.grad is None]
        finally:
            tr.model.zero_grad(set_to_none=True)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)

    def run(self) -> Any:
        self.log(f"data-parallel: {self.ctx.world} workers, {self.cfg.batch_size // self.ctx.world} "
                 f"examples each per step of {self.cfg.batch_size}")
        try:
            return super().run()
        except Exception as e:
            if peer_failure(e):        # DDP's own all-reduce, inside backward
                raise self.ctx.lost(e) from e
            raise

    # ---- checkpoints: rank 0 writes; every worker's RNG goes in ----------------------------------
    def _payload(self) -> dict[str, Any]:
        payload = super()._payload()
        payload["rng_ranks"] = self.ctx.all_gather_object(rng_state())
        payload["world_size"] = self.ctx.world
        return payload

    def _restore(self, ckpt: dict[str, Any]) -> None:
        super()._restore(ckpt)                      # rank 0's RNG (what a single process resumes)
        ranks = ckpt.get("rng_ranks")
        if ranks and len(ranks) == self.ctx.world:
            set_rng_state(ranks[self.ctx.rank])
        elif self.ctx.rank:                         # another number of workers: a fresh stream each
            torch.manual_seed(_rank_seed(self.cfg.seed, self.ctx.rank, self.step))

    def _evaluate(self, split: str, protocol: str, ranks_path: Any = None) -> dict:
        from engine.train.trainer import evaluate_split
        return evaluate_split(self.tr.model, self.data, split, protocol, self.cfg, self.device, self.progress,
                              self.stop, ranks_path=ranks_path, shard=self.ctx)

    def _load_best(self) -> None:
        if self.ctx.is_main:
            best = load_checkpoint(self.prep.run.best, map_location=self.device)
            self.tr.model.load_state_dict(best["model"])
        self.ctx.broadcast_module(self.tr.model)

    # ---- one epoch ------------------------------------------------------------------------------
    def _batch_step(self, idx: torch.Tensor) -> float:
        """This worker's slice of the global batch `idx`; its share of the global mean loss."""
        lo, hi = self.ctx.split(len(idx))
        share = (hi - lo) / len(idx)
        # a worker left without examples (the epoch's last batch smaller than the workers) still
        # takes part in the gradient all-reduce, with one example at weight 0
        local = idx[lo:hi] if hi > lo else idx[:1]
        # the single-process step through DDP (which averages the gradients over the workers, hence
        # weight = share * workers); clipping after it sees the same gradients on every worker
        return float(self.tr.step(local, loss_of=self.ddp, weight=share * self.ctx.world)) * share

    def _agree(self, loss: float, due: bool) -> tuple[float, bool, bool]:
        # the global batch's mean loss, whether rank 0 logs this step, and any stop: one all-reduce
        return self.stop.sync(loss, due)  # type: ignore[attr-defined]


# ---- a worker's run -------------------------------------------------------------------------------
def fit_distributed(cfg: TrainConfig | None, ws: Workspace, run_id: str | None = None, resume: bool = False,
                    epochs: int | None = None, device: str | None = None,
                    log: Callable[[str], None] | None = None, stop: StopFlag | None = None,
                    progress: ProgressFn | None = None, tracking: str | None = None,
                    evaluate_test: bool = True) -> dict:
    """`engine.train.loop.fit` for one worker of a torchrun job (all workers call it with the same
    arguments). Returns the final event on every worker. A refusal on rank 0 raises there and
    `PeerError` on the others. `tracking` and `evaluate_test` as in `fit`: rank 0 logs the run to
    MLflow."""
    ctx = DistContext.setup()
    try:
        if not ctx.is_main:
            log, progress = None, None
        log = log or (lambda m: None)
        prep, tracker = _prepare(ctx, cfg, ws, run_id, resume, epochs, device, tracking, log)
        agreed = AgreedStop(stop or StopFlag(), ctx)
        recorder = (lambda run: RunRecorder(run, tracker)) if ctx.is_main else NullRecorder
        return run_prepared(prep, recorder, lambda rec: DistLoop(ctx, prep, rec, log, agreed, progress,
                                                                 evaluate_test),
                            log, progress, evaluate_test)
    finally:
        ctx.teardown()


def _prepare(ctx: DistContext, cfg: TrainConfig | None, ws: Workspace, run_id: str | None, resume: bool,
             epochs: int | None, device: str | None, tracking: str | None = None,
             log: Callable[[str], None] = lambda m: None) -> tuple[_Prepared, Tracker]:
    """Rank 0 prepares the run as a single process does, and its tracker; the others get its config
    and checkpoint and load the dataset themselves. Any worker's refusal refuses the run on all,
    before it starts."""
    prep: _Prepared | None = None
    plan: dict[str, Any] | None = None
    tracker = Tracker()
    if ctx.is_main:
        try:
            tracker = tracker_for(ws, tracking, warn=log)       # a bad spec refuses the run on all
            if cfg is not None and not resume:
                check_world(cfg, ctx.world)
            prep = (_prepare_resume(ws, run_id, epochs, device) if resume
                    else _prepare_new(cfg, ws, run_id, epochs, device))
            try:
                check_world(prep.cfg, ctx.world)
            except BaseException:
                _abandon(prep)
                raise
            plan = {"run_id": prep.run.run_id, "cfg": prep.cfg.to_dict(),
                    "checkpoint": to_cpu(prep.checkpoint) if prep.checkpoint is not None else None}
        except BaseException as e:
            ctx.broadcast_object({"error": str(e), "code": 2 if isinstance(e, SessrecError) else 1})
            raise
    plan = ctx.broadcast_object(plan)
    if plan.get("error") is not None:
        raise PeerError(plan["code"])
    error = None
    if not ctx.is_main:
        try:
            wcfg = TrainConfig.from_dict(plan["cfg"])
            spec = get_spec(wcfg.model)
            data: DatasetArtifacts = _load_data(ws, wcfg, spec)
            prep = _Prepared(wcfg, spec, data, resolve_device(wcfg.device), ws.run(plan["run_id"]),
                             _NoLock(), checkpoint=plan["checkpoint"], resumed=resume)  # type: ignore[arg-type]
            if spec.kind == ModelKind.GNN and prep.checkpoint is not None \
                    and prep.checkpoint["item_fingerprint"] != data.items.fingerprint():
                raise InputError(f"dataset {data.name!r} on this worker has another item index than rank 0's")
        except Exception as e:
            error = f"{type(e).__name__}: {e}" if not isinstance(e, SessrecError) else str(e)
    errors = ctx.all_gather_object(error)
    bad = [(r, msg) for r, msg in enumerate(errors) if msg]
    if bad:
        if ctx.is_main:
            _abandon(prep)
            raise InputError("; ".join(f"worker {r} cannot start: {msg}" for r, msg in bad))
        raise PeerError(2)
    assert prep is not None
    prep.device = ctx.device(prep.device)
    return prep, tracker


def _abandon(prep: _Prepared | None) -> None:
    """A prepared run that will not start: its lock released, a folder made for it removed."""
    import shutil
    if prep is None:
        return
    prep.lock.release()
    if prep.created:
        shutil.rmtree(prep.run.root, ignore_errors=True)


__all__ = ["DistLoop", "NullRecorder", "AgreedStop", "PeerError", "WorkerLost", "check_world", "fit_distributed"]
