"""`sessrec bench search`: what one top-k query over an item table costs, exact and with the PQ scan.

Per table: an exact pass in float32, bfloat16 and float16 (matmul + topk, one query), the PQ fast
scan's build time, the candidate count calibrated to `target` agreement with exact top-10 on the
queries (candidates rescored exactly), and the scan's time per query (faiss: its parts on one thread
each, see `engine.inference.item_search.SCAN_PARTS`; the exact passes on `threads`). Tables: a
run's item table with session vectors of its test prefixes as queries (the real geometry), and a
synthetic table of RetailRocket's 235,061 items at d = 256 (clustered Gaussian vectors: a stand-in,
its agreement says little about real models; the exact-pass cost does not depend on the values).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from engine.bench.measure import machine, save_result
from engine.bench.recommend import RETAILROCKET_ITEMS
from engine.core.threads import set_compute_threads
from engine.core.workspace import Workspace
from engine.inference.item_search import PQSearch


def _ms_per_call(fn, n: int = 30) -> float:
    fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return round(float(np.median(t)) * 1000, 3)


def _exact_top(table: torch.Tensor, q: torch.Tensor, k: int) -> torch.Tensor:
    s = q @ table.T
    s[:, 0] = float("-inf")
    return torch.topk(s, k).indices


def measure_table(name: str, table: np.ndarray, queries: np.ndarray, k: int = 10, target: float = 0.99) -> dict:
    t = torch.from_numpy(table)
    q1 = torch.from_numpy(queries[:1])
    row: dict[str, Any] = {"table": name, "items": table.shape[0] - 1, "d": table.shape[1],
                           "queries": len(queries)}
    for dtype, label in ((torch.float32, "exact_fp32_ms"), (torch.bfloat16, "exact_bf16_ms"),
                         (torch.float16, "exact_fp16_ms")):
        tt, qq = t.to(dtype), q1.to(dtype)
        row[label] = _ms_per_call(lambda: torch.topk((qq @ tt.T).float(), k))
    exact = _exact_top(t, torch.from_numpy(queries), k).numpy()
    t0 = time.perf_counter()
    index = PQSearch.build(table)
    row["pq_build_s"] = round(time.perf_counter() - t0, 3)   # a small table builds in milliseconds

    def agreement() -> float:
        cand = index.search(queries, index.info.candidates)
        # candidates scored exactly, as the recommender does
        s = np.take_along_axis(queries @ table.T, cand, 1)
        top = np.take_along_axis(cand, np.argsort(-s, 1)[:, :k], 1)
        return float(np.mean(np.all(np.sort(top, 1) == np.sort(exact, 1), 1)))
    row["agreement@10"] = round(index.calibrate(agreement, target), 4)
    row["codes"], row["candidates"] = index.info.m, index.info.candidates
    qn = queries[:1]
    row["pq_ms"] = _ms_per_call(lambda: index.search(qn, index.info.candidates), 200)
    return row


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(ws: Workspace, run_id: str | None, n_queries: int = 1000, threads: int = 1, log=print, out=None) -> dict:
    set_compute_threads(threads, faiss=True)
    rows = []
    if run_id:
        from engine.inference.recommend import Recommender
        log(f"run {run_id}: item table and session vectors of {n_queries} test prefixes ...")
        rec = Recommender.load(ws.existing_run(run_id))
        prefixes = [p for p in rec._calibration_prefixes(n_queries) if p]
        with torch.inference_mode():
            reps = torch.cat([rec.encoder.encode(rec.builder.from_prefixes(prefixes[i:i + 256]))[0]
                              for i in range(0, len(prefixes), 256)])
        rows.append(measure_table(run_id, rec.table.numpy().copy(), reps.numpy()))
    log(f"synthetic {RETAILROCKET_ITEMS:,} x 256 table ...")
    both = _clustered(RETAILROCKET_ITEMS + 1 + n_queries, 256)     # queries from the same clusters
    synth, queries = both[:RETAILROCKET_ITEMS + 1].copy(), both[RETAILROCKET_ITEMS + 1:]
    synth[0] = 0
    rows.append(measure_table("synthetic", synth, queries))
    result = {"benchmark": "search", "threads": threads, "machine": machine(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    result["json_path"] = str(save_result("search", result, out))
    return result


def render(result: dict[str, Any]):
    """The table (80 columns): exact fp32 against the scan; the bf16/fp16 passes and the code
    count are in the JSON."""
    from engine.core.text import table
    cols = {"table": "table", "items": "items", "exact_fp32_ms": "exact ms", "pq_build_s": "PQ build s",
            "candidates": "cand.", "agreement@10": "agree @10", "pq_ms": "PQ ms"}
    return table(f"top-10 of one query, CPU, {result['threads']} thread(s)", list(cols.values()),
                 [[r[c] for c in cols] for r in result["rows"]], caption=f"json: {result['json_path']}")
