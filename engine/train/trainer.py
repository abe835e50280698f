"""One optimisation step and one evaluation pass: the machinery a run's loop (and the throughput
benchmark) drives. The loop itself, with checkpoints, events and early stopping, is `loop.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.core.alloc import returning_freed_memory
from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.progress import ProgressFn
from engine.core.schema import GraphMode, Protocol, Split
from engine.data.artifacts import DatasetArtifacts
from engine.data.batches import BatchBuilder, SessionStore, make_examples
from engine.evaluation.evaluate import evaluate
from engine.models.registry import build_model
from engine.train.losses import compute_loss
from engine.train.optim import lr_lambda, make_optimizer


@dataclass
class Trainer:
    """State shared by the steps of one run."""

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

    def step(self, idx: torch.Tensor, loss_of: Callable[[Any], torch.Tensor] | None = None,
             weight: float = 1.0) -> torch.Tensor:
        """One optimisation step on examples[idx]; returns the loss (a device tensor, no sync).
        `loss_of(batch)` computes the loss (default: the model's; a data-parallel worker passes its
        DDP wrapper) and `weight` scales it before the backward pass."""
        batch = self.builder(self.examples[idx])
        autocast = self.device.type == "cuda" and self.cfg.bf16
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = (loss_of(batch) if loss_of is not None
                    else compute_loss(self.model, batch, self.cfg.loss, self.cfg.negatives, self.item_freq))
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def state(self) -> dict[str, Any]:
        """Weights, optimizer and schedule (a checkpoint's resumable part)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])


def build_trainer(cfg: TrainConfig, data: DatasetArtifacts, device: torch.device) -> Trainer:
    model = build_model(cfg.model, cfg.model_params, data).to(device)
    if cfg.compile:
        # in place: score() and forward_with_items() go through the compiled forward, and the
        # state dict keeps its keys (no `_orig_mod` wrapper)
        model.compile(dynamic=True)
    ex = make_examples(data.train, cfg.examples, drop_unknown_targets=True)
    if len(ex) == 0:
        raise InputError(f"dataset {data.name!r} has no training examples (sessions of length >= 2)")
    builder = BatchBuilder(SessionStore(data.train, device), data.n_items, model.graph_mode, data.graph)
    opt = make_optimizer(model, cfg)
    steps = max(1, math.ceil(len(ex) / cfg.batch_size)) * (cfg.schedule_epochs or cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps))
    freq = torch.as_tensor(np.concatenate([[0], data.items.train_counts]).astype(np.float32), device=device)
    return Trainer(cfg, model, builder, torch.as_tensor(ex, device=device), opt, sched, freq, device)


class StoppedDuringEval(Exception):
    """A stop was requested while an evaluation pass ran (checked per batch)."""


def evaluate_split(model: Any, data: DatasetArtifacts, split: str, protocol: str, cfg: TrainConfig,
                   device: torch.device, progress: ProgressFn | None = None, stop: Any = None,
                   ranks_path: Path | None = None, shard: Any = None) -> dict:
    """`model` on a split of `data` under `protocol`, over the full catalogue (bf16 on CUDA like
    training). `stop`: anything with `.requested`; checked between batches. `ranks_path`: also save
    the per-example ranks there (`engine.evaluation.ranks.ExampleRanks`, atomically).

    `shard` (a `DistContext`): data-parallel workers each score a part and all get the whole
    result; the stop (a collective there) is checked once after the pass, and rank 0 saves the ranks.
    """
    mode = getattr(model, "graph_mode", GraphMode.NONE)
    builder = BatchBuilder(SessionStore(data.split(split), device), data.n_items, mode, data.graph)
    pop = np.concatenate([[0], data.items.train_counts])
    autocast = device.type == "cuda" and cfg.bf16

    def report(p):  # evaluation passes on large data take a while: honour a stop between batches
        if shard is None and stop is not None and stop.requested:
            raise StoppedDuringEval
        if progress is not None:
            progress(p)
    # large [batch, catalogue] scores of changing sizes: glibc's usual behaviour for the pass (engine.core.alloc)
    with returning_freed_memory(), \
            torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        res, ranks = evaluate(model, builder, data.split(split), protocol=Protocol(protocol),
                              batch_size=cfg.eval_batch_size, popularity=pop, progress=report, return_ranks=True,
                              shard=shard)
    if shard is not None and stop is not None and stop.requested:
        raise StoppedDuringEval
    if ranks_path is not None and (shard is None or shard.is_main):
        ranks.save(ranks_path)
    # the test split's new-item targets (engine.evaluation.cold_start): once, at the end, not per epoch
    meta = data.meta if data.meta is not None or split != Split.TEST else data.current_meta()
    if meta is not None and split == Split.TEST and (shard is None or shard.is_main):
        from engine.evaluation.cold_start import new_item_strata
        with returning_freed_memory(), \
                torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            cold = new_item_strata(model, data, split, protocol, ranks, meta, batch_size=cfg.eval_batch_size)
        if cold is not None:
            res["strata"]["new_items"] = {"new items": cold["new_items"]}
            res["cold_start"] = cold
    res["split"] = split
    return res
