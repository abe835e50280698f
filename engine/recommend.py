"""Top-k next items for a session typed as raw item ids, from a trained run or a baseline.

    rec = Recommender.load(run_dir)
    rec.recommend([355908, 248676], k=10)   # -> Recommendation (raw ids, scores, unknown ids, ...)

Raw ids not in the run's item index are reported as unknown and ignored; when none is known the
answer is the training popularity ranking, labelled as a fallback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.config import TrainConfig, from_dict
from engine.data.graph import CoocGraph
from engine.data.items import ItemIndex, parse_item_ids  # noqa: F401 (re-exported)
from engine.data.sessions import Sessions
from engine.errors import InputError
from engine.models.registry import get_spec
from engine.train.batches import BatchBuilder, SessionStore
from engine.train.checkpoint import BEST, LAST, load_checkpoint, rebuild_model
from engine.workspace import Workspace


@dataclass
class Recommendation:
    items: list[int]             # raw ids, best first
    scores: list[float]
    popularity: list[int]        # train count of each recommended item
    in_session: list[bool]       # the item already occurs in the typed session
    unknown: list[int]           # typed raw ids the model does not know (ignored)
    known: list[int]             # typed raw ids used
    fallback: bool               # True: no known id, popularity ranking
    source: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Recommender:
    def __init__(self, model, items: ItemIndex, builder: BatchBuilder, source: str,
                 device: torch.device, meta: dict) -> None:
        self.model = model
        self.items = items
        self.builder = builder
        self.source = source
        self.device = device
        self.meta = meta
        counts = np.concatenate([[0], items.train_counts])
        self._pop_order = np.argsort(-counts[1:], kind="stable") + 1   # item indices by popularity
        self._counts = counts
        if hasattr(model, "eval"):
            model.eval()

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, ws: Workspace | None = None, device: str = "cpu",
             checkpoint: str = BEST) -> "Recommender":
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists():
            raise InputError(f"{run_dir}: not a run folder (no config.json)")
        path = run_dir / checkpoint
        if not path.exists() and checkpoint == BEST and (run_dir / LAST).exists():
            path = run_dir / LAST
        ckpt = load_checkpoint(path)
        cfg = from_dict(TrainConfig, ckpt["config"])
        ws = ws or Workspace.open(run_dir.parent.parent)
        dev = torch.device(device)
        # the dataset by name in this workspace (never a stored absolute path: a copied workspace
        # must read its own files)
        paths = ws.dataset(cfg.dataset)
        items_path = paths.items
        if not items_path.exists():
            raise InputError(f"run {run_dir.name}: its dataset {cfg.dataset!r} item index is missing "
                             f"({items_path}); rebuild the dataset")
        items = ItemIndex.read(items_path)
        if items.fingerprint() != ckpt["item_fingerprint"]:
            raise InputError(f"run {run_dir.name}: dataset {cfg.dataset!r} was rebuilt with another item "
                             f"index; retrain the model")
        spec = get_spec(cfg.model)
        graph = None
        if spec.kind == "baseline":
            from engine.data.artifacts import load_dataset
            data = load_dataset(ws, cfg.dataset, with_pe=False)
            model = rebuild_model(ckpt, data)
            graph = data.graph
        else:
            if cfg.model_params.get("graph_mode") == "cooc":
                graph = CoocGraph.load(paths.graph)
            model = rebuild_model(ckpt)
        if hasattr(model, "to"):
            model = model.to(dev)
        mode = getattr(model, "graph_mode", "none")
        empty = SessionStore(Sessions.empty(np.int32), dev)
        builder = BatchBuilder(empty, items.n_items, mode if mode in ("transitions", "cooc") else "none", graph)
        return cls(model, items, builder, f"{cfg.model} (run {run_dir.name})", dev,
                   {"run_id": run_dir.name, "model": cfg.model, "dataset": cfg.dataset,
                    "epoch": ckpt.get("epoch")})

    @classmethod
    def for_baseline(cls, ws: Workspace, dataset: str, name: str, params: dict | None = None,
                     device: str = "cpu") -> "Recommender":
        from engine.data.artifacts import load_dataset
        from engine.models.registry import build_model, resolve_params
        spec = get_spec(name)
        if spec.kind != "baseline":
            raise InputError(f"{name} is not a baseline; train it first (sessrec train --model {name})")
        data = load_dataset(ws, dataset, with_pe=False)
        model = build_model(name, resolve_params(name, params), data)
        dev = torch.device(device)
        if hasattr(model, "to"):
            model = model.to(dev)
        empty = SessionStore(Sessions.empty(np.int32), dev)
        builder = BatchBuilder(empty, data.n_items, "none", data.graph)
        return cls(model, data.items, builder, f"{name} (baseline on {dataset})", dev,
                   {"model": name, "dataset": dataset})

    # ---- queries -------------------------------------------------------------------------------
    def popular(self, n: int = 50) -> list[tuple[int, int]]:
        idx = self._pop_order[:n]
        return list(zip(self.items.decode(idx).tolist(), self._counts[idx].tolist()))

    @torch.inference_mode()
    def recommend(self, raw_ids: list[int], k: int = 10) -> Recommendation:
        t0 = time.perf_counter()
        if k < 1:
            raise InputError("k must be >= 1")
        k = min(k, self.items.n_items)
        idx = self.items.encode(np.asarray(raw_ids, dtype=np.int64)) if raw_ids else np.zeros(0, np.int32)
        known_mask = idx > 0
        unknown = [r for r, ok in zip(raw_ids, known_mask) if not ok]
        known = [r for r, ok in zip(raw_ids, known_mask) if ok]
        session_idx = set(idx[known_mask].tolist())
        if not known_mask.any():
            top = self._pop_order[:k]
            scores = self._counts[top].astype(float).tolist()
            fallback, source = True, "popularity fallback (no known item in the session)"
        else:
            batch = self.builder.from_prefixes([idx[known_mask].tolist()])
            s = self.model.score(batch)[0].float()
            vals, top_t = torch.topk(s, k)
            top, scores = top_t.cpu().numpy(), vals.cpu().tolist()
            fallback, source = False, self.source
        return Recommendation(
            items=self.items.decode(top).tolist(), scores=[float(x) for x in scores],
            popularity=self._counts[top].tolist(), in_session=[int(t) in session_idx for t in top],
            unknown=unknown, known=known, fallback=fallback, source=source,
            seconds=time.perf_counter() - t0)
