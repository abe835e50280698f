"""Ablation: Graph Transformer variants trained under the same settings, chosen between on validation.

The reference's table (FFN on/off, PE on/off, 1-3 layers, CE vs BPR, readouts; "ref." marks the
reference project's choices: BPR with 5 negatives, one example per session, the induced
co-occurrence subgraph as the session graph) and the candidates with published gains beyond it:
the repeat-or-explore switch (RepeatNet), a contrastive objective beside next-item prediction
(CORE, DuoRec: two dropout views, InfoNCE), the global item graph (GCE-GNN), the NISER scale.

Every variant trains with early stopping on validation; the table reports its best validation
Recall@20 / MRR@20 (and @10), the epochs and the minutes. The test split is not read unless `test`
is asked for: variants are chosen on validation, and the winner is then refitted and tested once
(`sessrec train --refit`, `sessrec bench quality --refit`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.bench.measure import machine, result_path, save_result
from engine.core.config import TrainConfig
from engine.core.schema import Protocol
from engine.core.workspace import Workspace
from engine.runs import read_run

# (label, model, model params, train config overrides)
VARIANTS: list[tuple[str, str, dict, dict]] = [
    ("GT no FFN (default)", "graph_transformer", {}, {}),
    ("GT + FFN", "graph_transformer_ffn", {}, {}),
    ("GT no PE", "graph_transformer", {"use_pe": False}, {}),
    ("GT 1 layer", "graph_transformer", {"layers": 1}, {}),
    ("GT 3 layers", "graph_transformer", {"layers": 3}, {}),
    ("GT BPR-5 (ref. loss)", "graph_transformer", {}, {"loss": "bpr", "negatives": 5}),
    ("GT BPR-5 last-only (ref.)", "graph_transformer", {}, {"loss": "bpr", "negatives": 5,
                                                          "examples": "last"}),
    ("GT sampled softmax", "graph_transformer", {}, {"loss": "sampled", "negatives": 512}),
    ("GT no repeat scorer", "graph_transformer", {"repeat": False}, {}),
    ("GT cooc graph (ref.)", "graph_transformer", {"graph_mode": "cooc"}, {}),
    ("GT mean readout", "graph_transformer", {"readout": "mean"}, {}),
    ("GT switch", "graph_transformer", {"switch": True}, {}),
    ("GT contrastive 0.1", "graph_transformer", {"contrastive": 0.1}, {}),
    ("GT switch + contrastive 0.1", "graph_transformer", {"switch": True, "contrastive": 0.1}, {}),
    ("GT global graph k=10", "graph_transformer", {"global_k": 10}, {}),
    ("GT scale 16", "graph_transformer", {"scale": 16.0}, {}),
    ("GT highway gate", "graph_transformer", {"highway": True}, {}),
]
VAL_METRICS = ("recall@20", "mrr@20", "recall@10", "mrr@10")


def run(ws: Workspace, dataset: str, device: str = "auto", epochs: int = 20, patience: int = 3,
        batch_size: int = 512, base_params: dict | None = None, only: list[str] | None = None,
        log=print, out: Path | None = None, base_train: dict | None = None, test: bool = False,
        seed: int = 0) -> dict[str, Any]:
    """`base_train`: TrainConfig fields for every variant (a variant's own overrides win);
    `only`: substrings of the labels to run; `test`: also test every variant (not the protocol)."""
    from engine.train.loop import StopFlag, fit
    rows: list[dict[str, Any]] = []
    stop = StopFlag()
    result = {"benchmark": "ablation", "dataset": dataset, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine(), "device": device, "base_params": base_params or {},
              "base_train": base_train or {}, "seed": seed, "tested": test, "rows": rows, "complete": False}
    # One path for the whole run: the file is rewritten after every variant, so an interrupted
    # ablation (hours on a CPU) keeps what it measured.
    out = out or result_path(f"ablation-{dataset}")
    for label, model, params, overrides in VARIANTS:
        if only and not any(o.lower() in label.lower() for o in only):
            continue
        log(f"{label} ...")
        cfg = TrainConfig(dataset=dataset, model=model, model_params={**(base_params or {}), **params},
                          epochs=epochs, patience=patience, batch_size=batch_size, device=device, seed=seed,
                          **{**(base_train or {}), **overrides})
        t0 = time.perf_counter()
        final = fit(cfg, ws, log=lambda m: None, stop=stop, evaluate_test=test)
        st = read_run(ws, final["run_id"])
        ep = st.epoch_seconds
        best = final.get("best_val") or {}
        row = {"variant": label, "run_id": final["run_id"], "best_epoch": final.get("best_epoch"),
               "epochs_run": st.epochs_run, "epoch_seconds": round(sum(ep) / max(1, len(ep)), 2),
               "minutes": round((time.perf_counter() - t0) / 60, 2),
               **{f"val_{m}": best.get(m) for m in VAL_METRICS}}
        for proto in Protocol:
            m = ((final.get("test") or {}).get(proto) or {}).get("metrics", {})
            row[f"{proto}_recall@20"], row[f"{proto}_mrr@20"] = m.get("recall@20"), m.get("mrr@20")
        rows.append(row)
        log(f"  val recall@20 {row['val_recall@20']:.4f}, mrr@20 {row['val_mrr@20']:.4f}, "
            f"best epoch {row['best_epoch']}, {row['minutes']} min")
        save_result(f"ablation-{dataset}", result, out)
    result["complete"] = True
    result["json_path"] = str(save_result(f"ablation-{dataset}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.core.text import table
    tested = result.get("tested")
    rows = [[r["variant"], r.get("val_recall@20"), r.get("val_mrr@20"), r["best_epoch"], r.get("minutes"),
             *((r.get("prefixes_recall@20"), r.get("prefixes_mrr@20")) if tested else ())]
            for r in result["rows"]]
    return table(f"ablation on {result['dataset']} ({result['device']}): best epoch on validation",
                 ["variant", "val R@20", "val MRR@20", "epoch", "min", *(("test R@20", "test MRR@20")
                                                                         if tested else ())],
                 rows, caption=("test read for every variant (not the protocol)" if tested else
                                "test not read: refit the winner and test it once") + f"; json: {result['json_path']}")
