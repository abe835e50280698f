"""Top-k next items for a session typed as raw item ids, from a trained run or a baseline.

    rec = Recommender.load(ws.run(run_id))
    rec.recommend([355908, 248676], k=10)   # -> Recommendation (raw ids, scores, unknown ids, ...)

Raw ids not in the run's item index are reported as unknown and ignored; when none is known the
answer is the training popularity ranking, labelled as a fallback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.config import TrainConfig, from_dict
from engine.data.artifacts import load_dataset
from engine.data.items import ItemIndex
from engine.data.sessions import Sessions
from engine.errors import InputError
from engine.models.registry import build_model, get_spec
from engine.schema import GraphMode, ModelKind, StageName
from engine.train.batches import BatchBuilder, SessionStore
from engine.train.checkpoint import load_checkpoint, rebuild_model
from engine.workspace import RunDir, Workspace


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
    def load(cls, run: RunDir, device: str = "cpu", checkpoint: str = "best") -> "Recommender":
        """A run's model (its best checkpoint, else its last) with its dataset's item index, read
        from the workspace that holds the run."""
        if not run.exists:
            raise InputError(f"{run.root}: not a run folder (no {run.config.name})")
        path = run.checkpoint(checkpoint)
        if not path.exists() and checkpoint == "best" and run.last.exists():
            path = run.last
        ckpt = load_checkpoint(path)
        cfg = from_dict(TrainConfig, ckpt["config"])
        spec = get_spec(cfg.model)
        dev = torch.device(device)
        # the dataset by name in this run's workspace (never a stored absolute path: a copied
        # workspace reads its own files)
        mcfg = spec.config.from_dict(cfg.model_params)
        # a GNN carries its PE in its weights: it needs the item index (and the graph for cooc)
        stages = spec.stages(mcfg) if not spec.trains else (
            (StageName.ITEMS, StageName.GRAPH) if getattr(mcfg, "graph_mode", None) == GraphMode.COOC
            else (StageName.ITEMS,))
        data = load_dataset(run.workspace, cfg.dataset, stages=stages)
        if data.items.fingerprint() != ckpt["item_fingerprint"]:
            raise InputError(f"run {run.run_id}: dataset {cfg.dataset!r} was rebuilt with another item "
                             f"index; retrain the model")
        model = rebuild_model(ckpt, data).to(dev)
        return cls(model, data.items, cls._builder(model, data, dev), f"{cfg.model} (run {run.run_id})", dev,
                   {"run_id": run.run_id, "model": cfg.model, "dataset": cfg.dataset, "epoch": ckpt.get("epoch")})

    @classmethod
    def for_baseline(cls, ws: Workspace, dataset: str, name: str, params: dict | None = None,
                     device: str = "cpu") -> "Recommender":
        spec = get_spec(name)
        if spec.kind != ModelKind.BASELINE:
            raise InputError(f"{name} is not a baseline; train it first (sessrec train --model {name})")
        cfg = spec.resolve(params)
        data = load_dataset(ws, dataset, stages=spec.stages(cfg))
        dev = torch.device(device)
        model = build_model(name, cfg, data).to(dev)
        return cls(model, data.items, cls._builder(model, data, dev), f"{name} (baseline on {dataset})", dev,
                   {"model": name, "dataset": dataset})

    @staticmethod
    def _builder(model, data, dev: torch.device) -> BatchBuilder:
        """Batches for typed sessions (no stored split): an empty store, the model's graph mode."""
        empty = SessionStore(Sessions.empty(np.int32), dev)
        return BatchBuilder(empty, data.n_items, model.graph_mode, data.graph)

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
