"""Checkpoints `best.pt` and `last.pt`: everything needed to rebuild the model alone and to resume.

Contents: format version, the run's TrainConfig (with resolved model params), dataset name (resolved
in the workspace that holds the run, never by an absolute path), item count and item-map
fingerprint, model state,
optimizer and scheduler state, epoch / step / position inside the epoch, RNG states (torch, CUDA,
numpy, python), early-stopping state and library versions. Written atomically.
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from engine import __version__
from engine.atomic import atomic_path
from engine.config import TrainConfig, from_dict
from engine.errors import InputError, StorageError

CKPT_FORMAT = 1


def versions() -> dict:
    import torch_geometric
    return {"sessrec": __version__, "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
            "python": platform.python_version(), "numpy": np.__version__}


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically. Disk full or any OS error: StorageError naming the file."""
    payload = {"format": CKPT_FORMAT, "versions": versions(), **payload}
    try:
        with atomic_path(path, f"checkpoint {path.name}") as tmp:
            # a Python file object: a failed write raises OSError with its errno (disk full, file
            # too large), where torch's own writer only says "enforce fail at inline_container.cc"
            with open(tmp, "wb") as f:
                torch.save(payload, f)
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(f"checkpoint {path.name}", path, e) from e
    except RuntimeError as e:          # torch's writer wraps the failed write
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError):
            raise StorageError(f"checkpoint {path.name}", path, cause) from e
        raise


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
    from engine.models.registry import build_model, get_spec
    cfg = from_dict(TrainConfig, ckpt["config"])
    spec = get_spec(cfg.model)
    if not spec.trains:
        if data is None:
            raise InputError(f"{spec.kind} {cfg.model} needs its dataset to be rebuilt")
        return build_model(cfg.model, cfg.model_params, data)
    # the PE buffer is part of the weights: build with a placeholder of the saved shape
    pe_shape = ckpt.get("pe_shape")
    stub = SimpleNamespace(n_items=ckpt["n_items"], graph=getattr(data, "graph", None), train=None,
                           items=None, pe=np.zeros(pe_shape, np.float32) if pe_shape else None)
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
    from engine.data.artifacts import load_dataset
    from engine.models.registry import get_spec
    from engine.schema import GraphMode, StageName
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
    data = load_dataset(run.workspace, cfg.dataset, stages=stages)
    if data.items.fingerprint() != ckpt["item_fingerprint"]:
        raise InputError(f"run {run.run_id}: dataset {cfg.dataset!r} was rebuilt with another item index; "
                         f"retrain the model")
    model = rebuild_model(ckpt, data).to(torch.device(device)).eval()
    return LoadedRun(model, data, cfg, spec, path, st, ckpt.get("epoch"))
