"""Quality benchmark: every model and baseline on the real samples and the demo, both protocols.

Each model is trained with `sessrec train` semantics: epochs chosen on validation (early stopping
on val Recall@10), test evaluated once with the best epoch. Datasets:

- yoochoose-100k: the published train_full/test files of session-rec (test = the given last day);
  minimum session length 2 as published; validation = latest 10% of the train file, no gap (the
  published train/test boundary has none either). Test items unseen in train are reported.
- diginetica-sample: SR-GNN preprocessing: items seen >= 5 times, sessions of length >= 2, the last
  7 days are test; validation = latest 10% of the rest.
- demo-small / demo-full: the generator's logs with the default pipeline, next to its oracle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.bench.measure import machine, save_result
from engine.config import DataConfig, TrainConfig
from engine.data.manifest import Dataset
from engine.errors import InputError
from engine.models.registry import get_spec
from engine.runs import read_run
from engine.schema import ModelKind, Protocol
from engine.workspace import Workspace

DATASETS: dict[str, dict[str, Any]] = {
    "yoochoose-100k": {"format": "rsc15", "batch_size": 256, "path": "yoochoose-clicks-100k_train_full.txt.gz",
                       "test": "yoochoose-clicks-100k_test.txt.gz",
                       "cfg": {"min_session_length": 2, "split_mode": "test_file", "val_ratio": 0.1,
                               "blackout_days": 0.0}},
    "diginetica-sample": {"format": "diginetica", "batch_size": 64, "path": "diginetica-sample_train-item-views.csv.gz",
                          "cfg": {"min_session_length": 2, "min_item_support": 5, "split_mode": "days",
                                  "test_days": 7.0, "val_ratio": 0.1, "blackout_days": 0.0}},
    "demo-small": {"demo": "small"},
    "demo-full": {"demo": "full"},
}


def prepare(ws: Workspace, name: str, shared: Path, log=print) -> Dataset:
    spec = DATASETS.get(name)
    if spec is None:
        raise InputError(f"unknown benchmark dataset {name!r}; expected one of {', '.join(DATASETS)}")
    bname = f"q-{name}"
    if "demo" in spec:
        from engine.bench.pipeline import ensure_demo
        ds = ensure_demo(ws, spec["demo"], log=log)
    else:
        path = shared / spec["path"]
        if not path.exists():
            raise InputError(f"{path}: real sample missing (see ../shared/data/README.md)")
        test = shared / spec["test"] if spec.get("test") else None
        ds = Dataset.create(ws, bname, path, DataConfig(format=spec["format"], **spec["cfg"]), test_path=test,
                            overwrite=not ws.dataset(bname).exists)
    from engine.data.pipeline import build
    build(ds)
    return Dataset.load(ws, ds.name)


def run(ws: Workspace, datasets: list[str], models: list[str], shared: Path, device: str = "auto",
        epochs: int = 30, patience: int = 3, batch_size: int = 512, extra: dict | None = None,
        log=print, out: Path | None = None) -> dict[str, Any]:
    from engine.train.loop import StopFlag, fit
    rows = []
    stop = StopFlag()
    for name in datasets:
        ds = prepare(ws, name, shared, log)
        oracle = (ds.stage_record("oracle") or {}).get("stats")
        for model in models:
            log(f"[{name}] {model} ...")
            params = dict(extra or {}) if get_spec(model).kind == ModelKind.GNN else {}
            # small datasets get smaller batches (enough optimiser steps per epoch)
            bs = DATASETS[name].get("batch_size", batch_size)
            cfg = TrainConfig(dataset=ds.name, model=model, epochs=epochs, patience=patience,
                              batch_size=bs, device=device, model_params=params)
            final = fit(cfg, ws, log=lambda m: None, stop=stop)
            summ = read_run(ws, final["run_id"])
            row = {"dataset": name, "model": model, "kind": summ.kind, "run_id": final["run_id"],
                   "status": final.get("status"), "best_epoch": final.get("best_epoch"),
                   "val_recall@10": (final.get("best_val") or {}).get("recall@10"),
                   "seconds": final.get("seconds"), "device": summ.device}
            for proto in Protocol:
                r = (final.get("test") or {}).get(proto) or {}
                m = r.get("metrics", {})
                row[f"{proto}_recall@10"] = m.get("recall@10")
                row[f"{proto}_mrr@10"] = m.get("mrr@10")
                row[f"{proto}_ndcg@10"] = m.get("ndcg@10")
                row[f"{proto}_recall@20"] = m.get("recall@20")
                row[f"{proto}_n"] = r.get("n")
                row[f"{proto}_unseen"] = r.get("unseen_targets")
            rows.append(row)
            log(f"  test R@10 last {row['last_recall@10']:.4f}, prefixes {row['prefixes_recall@10']:.4f} "
                f"(best epoch {row['best_epoch']}, {row['seconds']}s)")
        if oracle:
            rows.append({"dataset": name, "model": "oracle (generator)", "kind": "oracle",
                         "last_recall@10": oracle.get("recall@10_last"),
                         "prefixes_recall@10": oracle.get("recall@10_prefixes"),
                         "last_recall@20": oracle.get("recall@20_last"),
                         "prefixes_recall@20": oracle.get("recall@20_prefixes"),
                         "last_mrr@10": oracle.get("detail", {}).get("last@10", {}).get("mrr"),
                         "prefixes_mrr@10": oracle.get("detail", {}).get("prefixes@10", {}).get("mrr")})
    verdicts = verdict(rows)
    result = {"benchmark": "quality", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
              "epochs": epochs, "patience": patience, "batch_size": batch_size, "rows": rows,
              "verdicts": verdicts}
    result["json_path"] = str(save_result("quality", result, out))
    return result


def verdict(rows: list[dict]) -> list[dict]:
    """Best GNN vs best baseline per dataset and protocol; vs oracle on the demo."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        for proto in Protocol:
            key = f"{proto}_recall@10"
            gnn = max((r for r in rs if r["kind"] == ModelKind.GNN and r.get(key) is not None), key=lambda r: r[key],
                      default=None)
            base = max((r for r in rs if r["kind"] == ModelKind.BASELINE and r.get(key) is not None),
                       key=lambda r: r[key], default=None)
            orc = next((r for r in rs if r["kind"] == "oracle"), None)
            v = {"dataset": name, "protocol": proto,
                 "best_gnn": gnn and gnn["model"], "best_gnn_recall@10": gnn and gnn[key],
                 "best_baseline": base and base["model"], "best_baseline_recall@10": base and base[key]}
            if gnn and base:
                v["gnn_beats_baseline"] = gnn[key] >= base[key]
            if gnn and orc and orc.get(key):
                v["oracle_recall@10"] = orc[key]
                v["gnn_share_of_oracle"] = round(gnn[key] / orc[key], 4)
                v["within_10pct_of_oracle"] = gnn[key] >= 0.9 * orc[key]
            out.append(v)
    return out


def render(result: dict[str, Any]):
    """One table per dataset (models as rows), so that it stays readable at 80 columns."""
    from rich.console import Group

    from engine.cli.output import table
    tables = []
    for ds in dict.fromkeys(r["dataset"] for r in result["rows"]):
        rs = [r for r in result["rows"] if r["dataset"] == ds]
        rows = [[r["model"], r.get("best_epoch"), r.get("val_recall@10"), r.get("last_recall@10"),
                 r.get("last_mrr@10"), r.get("prefixes_recall@10"), r.get("prefixes_mrr@10"), r.get("seconds")]
                for r in rs]
        first = next((r for r in rs if r.get("last_n")), {})
        vt = "; ".join(f"{v['protocol']}: {v['best_gnn']} {v['best_gnn_recall@10']:.4f} vs "
                       f"{v['best_baseline']} {v['best_baseline_recall@10']:.4f}"
                       + (f", {v['gnn_share_of_oracle']:.0%} of oracle" if "gnn_share_of_oracle" in v else "")
                       for v in result["verdicts"]
                       if v["dataset"] == ds and v.get("best_gnn") and v.get("best_baseline"))
        tables.append(table(f"{ds}: test split, best epoch chosen on validation (n last {first.get('last_n')}, "
                            f"prefixes {first.get('prefixes_n')}; unseen targets {first.get('last_unseen')} / "
                            f"{first.get('prefixes_unseen')}, counted as misses)",
                            ["model", "ep", "val R@10", "last R@10", "last MRR@10", "pref R@10",
                             "pref MRR@10", "seconds"], rows, caption=vt))
    return Group(*tables, f"json: {result['json_path']}")
