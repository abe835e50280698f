"""Recommendation latency: milliseconds per `recommend(session, k=10)` call on the CPU.

Latency does not depend on what the weights learned, so models are built untrained at full size:
a Graph Transformer (hidden 256) on a dataset's real item index, a synthetic 235,061-item catalogue
(RetailRocket's item count), and the session-kNN baseline. Sessions are test sessions of the
dataset (raw ids, 1-10 items).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from engine.bench.measure import machine, save_result
from engine.core.threads import set_compute_threads
from engine.core.workspace import Workspace
from engine.data.artifacts import load_dataset
from engine.data.batches import BatchBuilder, SessionStore
from engine.data.items import ItemIndex
from engine.data.sessions import Sessions
from engine.inference.recommend import Recommender
from engine.models.registry import build_model, resolve_params

RETAILROCKET_ITEMS = 235_061


def _time_calls(rec: Recommender, sessions: list[list[int]]) -> dict[str, float]:
    rec.recommend(sessions[0], k=10)                       # warm-up (lazy init, caches)
    ms = []
    for s in sessions:
        t0 = time.perf_counter()
        rec.recommend(s, k=10)
        ms.append((time.perf_counter() - t0) * 1000)
    a = np.array(ms)
    return {"calls": len(a), "median_ms": round(float(np.median(a)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2), "max_ms": round(float(a.max()), 2)}


def _gnn_recommender(items: ItemIndex, pe: np.ndarray | None) -> Recommender:
    params = resolve_params("graph_transformer", {"hidden": 256, "use_pe": pe is not None}, "cuda")
    model = build_model("graph_transformer", params, SimpleNamespace(n_items=items.n_items, pe=pe))
    builder = BatchBuilder(SessionStore(Sessions.empty(np.int32)), items.n_items, model.graph_mode)
    return Recommender(model, items, builder, "graph_transformer (untrained, hidden 256)",
                       torch.device("cpu"), {})


def run(ws: Workspace, dataset: str, n_calls: int = 200, threads: int = 1, log=print, out=None) -> dict[str, Any]:
    set_compute_threads(threads)
    data = load_dataset(ws, dataset)
    rng = np.random.default_rng(0)
    test = data.test
    pick = rng.choice(len(test), size=min(n_calls, len(test)), replace=False)
    raw = data.items.decode(test.items.astype(np.int64))
    sessions = [raw[test.offsets[i]:test.offsets[i + 1]][:10].tolist() for i in pick]
    sessions = [[x for x in s if x >= 0] or [int(data.items.raw_ids[0])] for s in sessions]
    rows = []
    log(f"graph_transformer on {dataset} ({data.n_items:,} items) ...")
    rows.append({"model": "GT hidden 256", "catalogue": data.n_items,
                 **_time_calls(_gnn_recommender(data.items, data.pe), sessions)})
    log(f"graph_transformer on a synthetic {RETAILROCKET_ITEMS:,}-item catalogue ...")
    big = ItemIndex(np.arange(1, RETAILROCKET_ITEMS + 1, dtype=np.int64),
                    np.ones(RETAILROCKET_ITEMS, dtype=np.int64))
    big_sessions = [rng.integers(1, RETAILROCKET_ITEMS + 1, size=len(s)).tolist() for s in sessions]
    rows.append({"model": "GT hidden 256, no PE", "catalogue": RETAILROCKET_ITEMS,
                 **_time_calls(_gnn_recommender(big, None), big_sessions)})
    for name in ("sknn", "itemknn"):
        log(f"{name} on {dataset} ...")
        rows.append({"model": name, "catalogue": data.n_items,
                     **_time_calls(Recommender.for_baseline(ws, dataset, name), sessions)})
    result = {"benchmark": "recommend", "dataset": dataset, "threads": threads, "machine": machine(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    result["json_path"] = str(save_result(f"recommend-{dataset}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.core.text import table
    rows = [[r["model"], r["catalogue"], r["median_ms"], r["p95_ms"], r["max_ms"], r["calls"]]
            for r in result["rows"]]
    return table(f"recommend(session, k=10) latency, CPU, {result['threads']} thread(s)",
                 ["model", "items", "median ms", "p95 ms", "max ms", "calls"], rows,
                 caption=f"json: {result['json_path']}")
