"""Hybrid: a trained GNN's next-item distribution mixed with a baseline's, the share chosen on validation.

    p(i) = (1 - w) * softmax(gnn logits)(i) + w * base(i) / sum_j base(j)       score = log p(i)

The baseline's scores (kNN or rule weights, all >= 0 with their popularity tie-break) are read as a
distribution by normalising each row. `w` = `weight`, or, when `weight` < 0, the grid value that
maximises `metric` on the validation split (one scoring pass: both models score each batch once and
every grid value is ranked from those scores). The GNN comes from a finished run (its best
checkpoint); the baseline from a baseline run (its tuned parameters) or by name with its defaults.
It is reported apart from the pure models: it needs both of them at serving time.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.config import HybridConfig
from engine.core.errors import InputError
from engine.core.metrics import metrics_from_ranks
from engine.core.schema import ModelKind, Split
from engine.data.batches import Batch, BatchBuilder, SessionStore
from engine.data.examples import make_examples
from engine.models.base import mask_padding
from engine.models.checkpoint import load_checkpoint, rebuild_model
from engine.models.registry import build_model, get_spec

WEIGHT_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))


class Hybrid(nn.Module):
    def __init__(self, gnn: nn.Module, baseline: nn.Module, weight: float = 0.5) -> None:
        super().__init__()
        self.gnn, self.baseline, self.weight = gnn, baseline, float(weight)
        self.graph_mode = gnn.graph_mode           # GNN batches carry what the baselines read too
        self.n_items = gnn.n_items
        self.fitted_params: dict[str, float] = {}       # what fitting chose (the weight, if chosen)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(GNN probabilities, baseline distribution), float64 [B, V+1], column 0 = 0."""
        g = torch.softmax(mask_padding(self.gnn.score(batch).double()), 1)
        b = self.baseline.score(batch).double().clamp(min=0.0)
        b[:, 0] = 0.0
        return g, b / b.sum(1, keepdim=True).clamp(min=1e-300)

    @staticmethod
    def mix(g: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
        return mask_padding(torch.log((1.0 - weight) * g + weight * b))

    def score(self, batch: Batch) -> torch.Tensor:
        return self.mix(*self.parts(batch), self.weight)


@torch.no_grad()
def choose_weight(model: Hybrid, data: Any, protocol: str, metric: str, batch_size: int = 512,
                  grid: tuple[float, ...] = WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """The grid weight with the best validation `metric` (ties: the smaller weight), and all values."""
    sessions = data.split(Split.VAL)
    examples = make_examples(sessions, protocol)
    if len(examples) == 0:
        raise InputError(f"dataset {data.name!r} has no validation examples to choose the hybrid weight on; "
                         f"give --weight")
    device = next(model.gnn.parameters()).device
    builder = BatchBuilder(SessionStore(sessions, device), data.n_items, model.graph_mode, data.graph)
    was = model.training
    model.eval()
    ranks: dict[float, list[np.ndarray]] = {w: [] for w in grid}
    for start in range(0, len(examples), batch_size):
        batch = builder(examples[start:start + batch_size])
        g, b = model.parts(batch)
        tgt = batch.targets[:, None]
        for w in grid:
            p = model.mix(g, b, w)
            r = 1.0 + (p > p.gather(1, tgt)).sum(1).double()
            ranks[w].append(torch.where(tgt.squeeze(1) == 0, torch.inf, r).cpu().numpy())
    model.train(was)
    values = {w: metrics_from_ranks(np.concatenate(ranks[w]))[metric] for w in grid}
    best = max(grid, key=lambda w: (values[w], -w))
    return best, values


def _run_config(data: Any, run_id: str, what: str) -> tuple[Any, dict]:
    run = data.paths.workspace.run(run_id)
    if not run.config.exists():
        raise InputError(f"hybrid {what} run {run_id!r} not found in {run.root.parent}")
    cfg = json.loads(run.config.read_text())
    ds = cfg.get("train", {}).get("dataset")
    if ds != data.name:
        raise InputError(f"hybrid {what} run {run_id!r} was trained on dataset {ds!r}, not {data.name!r}")
    fp = cfg.get("dataset", {}).get("item_fingerprint")
    if fp is not None and fp != data.items.fingerprint():
        raise InputError(f"hybrid {what} run {run_id!r}: dataset {data.name!r} was rebuilt since; retrain it")
    return run, cfg


def build_hybrid(cfg: HybridConfig, data: Any) -> Hybrid:
    run, rcfg = _run_config(data, cfg.gnn_run, "GNN")
    if get_spec(rcfg["train"]["model"]).kind != ModelKind.GNN:
        raise InputError(f"hybrid gnn_run {cfg.gnn_run!r} is a {rcfg['train']['model']} run, not a GNN run")
    gnn = rebuild_model(load_checkpoint(run.best), data)
    if cfg.baseline_run:
        _, bcfg = _run_config(data, cfg.baseline_run, "baseline")
        name, params = bcfg["train"]["model"], bcfg["train"]["model_params"]
    else:
        name, params = cfg.baseline, None
    if get_spec(name).kind != ModelKind.BASELINE:
        raise InputError(f"hybrid baseline {name!r} is not a baseline")
    baseline = build_model(name, get_spec(name).resolve(params), data)
    model = Hybrid(gnn, baseline, max(cfg.weight, 0.0))
    if cfg.weight < 0:
        model.weight, values = choose_weight(model, data, cfg.select_protocol, cfg.select_metric)
        model.fitted_params = {"weight": model.weight}
        model.weight_curve = values
    return model
