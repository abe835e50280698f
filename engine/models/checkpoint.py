"""Reading a run's checkpoint (`best.pt` / `last.pt`) and rebuilding its model from it.

Contents of a checkpoint (written by `engine.train.checkpoint`): format version, the run's
TrainConfig (with resolved model params), dataset name (resolved in the workspace that holds the
run, never by an absolute path), item count and item-map fingerprint, model state, optimizer and
scheduler state, epoch / step / position inside the epoch, RNG states, early-stopping state and
library versions. Everything that serves or exports a run reads it through here; training writes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from engine.core.config import TrainConfig, from_dict
from engine.core.errors import InputError
from engine.core.schema import GraphMode, StageName
from engine.data.artifacts import load_dataset
from engine.data.item_meta import FeatureSpec, ItemFeatures
from engine.models.registry import build_model, get_spec

CKPT_FORMAT = 1


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"{path}: no checkpoint (the run has not finished an epoch, or it failed)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise InputError(f"{path}: not a readable sessrec checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise InputError(f"{path}: not a sessrec checkpoint of format {CKPT_FORMAT}")
    return ckpt


def rebuild_model(ckpt: dict, data: Any | None = None):
    """Rebuild the model of a checkpoint and load its weights.

    GNN weights include the PE buffer, so `data` is optional for them: a stand-in with the item
    count and a PE of the right shape is enough. Baselines are fitted from the dataset: `data`
    required.
    """
    cfg = from_dict(TrainConfig, ckpt["config"])
    spec = get_spec(cfg.model)
    if not spec.trains:
        if data is None:
            raise InputError(f"{spec.kind} {cfg.model} needs its dataset to be rebuilt")
        return build_model(cfg.model, cfg.model_params, data)
    # the PE buffer is part of the weights: build with a placeholder of the saved shape
    pe_shape = ckpt.get("pe_shape")
    spec_d = ckpt.get("feature_spec")
    features = ItemFeatures.placeholder(FeatureSpec.from_dict(spec_d), ckpt["n_items"]) if spec_d else None
    stub = SimpleNamespace(n_items=ckpt["n_items"], graph=getattr(data, "graph", None), train=None,
                           items=None, pe=np.zeros(pe_shape, np.float32) if pe_shape else None,
                           item_features=lambda: features)
    model = build_model(cfg.model, cfg.model_params, stub)
    model.load_state_dict(ckpt["model"])
    return model


@dataclass
class LoadedRun:
    """A run's model rebuilt from a checkpoint, with the dataset artifacts it needs."""

    model: Any
    data: Any
    cfg: TrainConfig
    spec: Any                        # its ModelSpec
    checkpoint: Path
    checkpoint_stat: os.stat_result  # taken before reading: a checkpoint replaced meanwhile looks stale later
    epoch: int | None


def load_run(run: Any, checkpoint: str = "best", device: str | torch.device = "cpu",
             exact: bool = False) -> LoadedRun:
    """`run`'s model (a RunDir) from its best checkpoint, else its last (`exact`: only the one
    named), with the dataset it was
    trained on, by name in the run's own workspace (a copied workspace reads its own files).
    A GNN carries its PE in its weights: it needs only the item index (and the graph in cooc mode);
    a baseline or hybrid is fitted again from the stages it needs."""
    if not run.exists:
        raise InputError(f"{run.root}: not a run folder (no {run.config.name})")
    path = run.checkpoint(checkpoint) if exact else run.served_checkpoint(checkpoint)
    st = path.stat() if path.exists() else None
    ckpt = load_checkpoint(path)
    cfg = from_dict(TrainConfig, ckpt["config"])
    spec = get_spec(cfg.model)
    mcfg = spec.config.from_dict(cfg.model_params)
    stages = spec.stages(mcfg) if not spec.trains else (
        (StageName.ITEMS, StageName.GRAPH) if getattr(mcfg, "graph_mode", None) == GraphMode.COOC
        else (StageName.ITEMS,))
    try:      # a dataset rebuilt since (new data appended): the run's own item index, from the archive
        data = load_dataset(run.workspace, cfg.dataset, stages=stages, item_fingerprint=ckpt["item_fingerprint"])
    except InputError as e:
        raise InputError(f"run {run.run_id}: {e}") from None
    model = rebuild_model(ckpt, data).to(torch.device(device)).eval()
    return LoadedRun(model, data, cfg, spec, path, st, ckpt.get("epoch"))
