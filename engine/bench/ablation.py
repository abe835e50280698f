"""Ablation like the reference's table: FFN on/off, PE on/off, 1-3 layers, CE vs BPR, readouts.

"ref." marks the reference project's choices: BPR with 5 negatives, one example (the last item)
per session, and the induced co-occurrence subgraph as the session graph.

Every variant trains with early stopping on validation and is tested once; the table reports the
best validation Recall@10, test Recall@10 / MRR@10 under both protocols and seconds per epoch.
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
]


def run(ws: Workspace, dataset: str, device: str = "auto", epochs: int = 20, patience: int = 3,
        batch_size: int = 512, base_params: dict | None = None, only: list[str] | None = None,
        log=print, out: Path | None = None) -> dict[str, Any]:
    from engine.train.loop import StopFlag, fit
    rows: list[dict[str, Any]] = []
    stop = StopFlag()
    result = {"benchmark": "ablation", "dataset": dataset, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine(), "device": device, "base_params": base_params or {}, "rows": rows,
              "complete": False}
    # One path for the whole run: the file is rewritten after every variant, so an interrupted
    # ablation (hours on a CPU) keeps what it measured.
    out = out or result_path(f"ablation-{dataset}")
    for label, model, params, overrides in VARIANTS:
        if only and not any(o.lower() in label.lower() for o in only):
            continue
        log(f"{label} ...")
        cfg = TrainConfig(dataset=dataset, model=model, model_params={**(base_params or {}), **params},
                          epochs=epochs, patience=patience, batch_size=batch_size, device=device,
                          **overrides)
        final = fit(cfg, ws, log=lambda m: None, stop=stop)
        st = read_run(ws, final["run_id"])
        ep = st.epoch_seconds
        row = {"variant": label, "run_id": final["run_id"], "best_epoch": final.get("best_epoch"),
               "epochs_run": st.epochs_run, "epoch_seconds": round(sum(ep) / max(1, len(ep)), 2),
               "val_recall@10": (final.get("best_val") or {}).get("recall@10")}
        for proto in Protocol:
            m = ((final.get("test") or {}).get(proto) or {}).get("metrics", {})
            row[f"{proto}_recall@10"], row[f"{proto}_mrr@10"] = m.get("recall@10"), m.get("mrr@10")
        rows.append(row)
        log(f"  val {row['val_recall@10']:.4f}, test last {row['last_recall@10']:.4f}, "
            f"{row['epoch_seconds']}s/epoch")
        save_result(f"ablation-{dataset}", result, out)
    result["complete"] = True
    result["json_path"] = str(save_result(f"ablation-{dataset}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.core.text import table
    rows = [[r["variant"], r["val_recall@10"], r["last_recall@10"], r["last_mrr@10"], r["prefixes_recall@10"],
             r["prefixes_mrr@10"], r["best_epoch"], r["epoch_seconds"]] for r in result["rows"]]
    return table(f"ablation on {result['dataset']} ({result['device']})",
                 ["variant", "val R@10", "last R@10", "last MRR@10", "pref R@10", "pref MRR@10", "ep",
                  "s/ep"], rows, caption=f"json: {result['json_path']}")
