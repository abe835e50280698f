"""Training/evaluation throughput: examples per second and seconds per epoch for each model.

Each configuration builds the real Trainer (same batches, loss and optimizer step as `sessrec
train`), runs warm-up steps, then times `steps` steps (or a whole epoch with `full_epoch`) with the
device synchronised at both ends. Evaluation throughput is timed with the real evaluator.
The `reference` row reproduces the reference implementation's own configuration: no-FFN Graph
Transformer, dimension 256, 2 layers, 2 heads, BPR with 5 negatives, one example per session; the
reference trains 6.6 sessions/s and evaluates 30-39 sessions/s on this kind of CPU.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from engine.bench.measure import machine, save_result
from engine.core.alloc import reuse_freed_memory
from engine.core.config import TrainConfig
from engine.core.device import resolve_device
from engine.core.workspace import Workspace
from engine.data.artifacts import load_dataset
from engine.data.batches import BatchBuilder, SessionStore
from engine.evaluation.evaluate import evaluate
from engine.models.registry import resolve_params
from engine.train.loop import build_trainer, seed_everything

REFERENCE_TRAIN_SESSIONS_PER_S = 6.6
REFERENCE_EVAL_SESSIONS_PER_S = (30, 39)
GNN_MODELS = ("graphsage", "gat", "graph_transformer", "graph_transformer_ffn")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(cfg: TrainConfig, data, device: torch.device, steps: int, warmup: int = 3,
                  full_epoch: bool = False) -> dict[str, Any]:
    seed_everything(cfg.seed)
    reuse_freed_memory()                          # as `fit` does
    tr = build_trainer(cfg, data, device)
    n = len(tr.examples)
    perm = torch.randperm(n, device=device)
    B = cfg.batch_size
    spe = tr.steps_per_epoch
    for i in range(min(warmup, spe)):
        tr.step(perm[i * B:(i + 1) * B])
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    todo = spe if full_epoch else min(steps, spe)
    t0 = time.perf_counter()
    loss = None
    for i in range(todo):
        j = i % spe
        loss = tr.step(perm[j * B:(j + 1) * B])
    _sync(device)
    secs = time.perf_counter() - t0
    done = min(n, todo * B) if full_epoch else todo * B
    eps = done / secs
    out = {"examples": n, "steps_timed": todo, "seconds_timed": round(secs, 3),
           "examples_per_s": round(eps, 1), "seconds_per_step": round(secs / todo, 4),
           "epoch_seconds": round(secs, 2) if full_epoch else round(n / eps, 1),
           "epoch_measured": full_epoch, "loss": round(float(loss), 4) if loss is not None else None,
           "n_params": sum(p.numel() for p in tr.model.parameters())}
    if device.type == "cuda":
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    out["_model"] = tr.model
    return out


def time_eval(model, data, device: torch.device, protocol: str = "last", max_examples: int = 4096,
              batch_size: int = 512, bf16: bool = True) -> dict[str, Any]:
    builder = BatchBuilder(SessionStore(data.test, device), data.n_items, model.graph_mode, data.graph)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16):
        res = evaluate(model, builder, data.test, protocol=protocol, batch_size=batch_size,
                       max_examples=max_examples)
    return {"eval_examples": res["n"], "eval_seconds": round(res["seconds"], 3),
            "eval_per_s": round(res["n"] / max(res["seconds"], 1e-9), 1)}


def run(ws: Workspace, dataset: str, device_name: str = "auto", models: tuple[str, ...] = GNN_MODELS,
        batch_size: int = 1024, steps: int = 20, hidden: int = 256, full_epoch: bool = False,
        bf16: bool = True, compile: bool = False, reference: bool = True, loss: str = "ce",
        log=print, out=None) -> dict[str, Any]:
    device = resolve_device(device_name)
    data = load_dataset(ws, dataset)
    rows = []
    configs: list[tuple[str, TrainConfig]] = []
    for m in models:
        params = resolve_params(m, {"hidden": hidden}, device.type)
        configs.append((m, TrainConfig(dataset=dataset, model=m, model_params=params, batch_size=batch_size,
                                       loss=loss, bf16=bf16, compile=compile, device=device_name)))
    if reference:
        params = resolve_params("graph_transformer", {"hidden": 256, "layers": 2, "heads": 2}, device.type)
        configs.append(("reference setup (GT)",
                        TrainConfig(dataset=dataset, model="graph_transformer", model_params=params,
                                    batch_size=512, loss="bpr", negatives=5, examples="last", bf16=bf16,
                                    compile=compile, device=device_name)))
    for label, cfg in configs:
        log(f"timing {label} ...")
        r = time_training(cfg, data, device, steps, full_epoch=full_epoch and not label.startswith("reference"))
        model = r.pop("_model")
        r.update(time_eval(model, data, device, bf16=bf16))
        r.update({"config": label, "model": cfg.model, "loss": cfg.loss, "examples_mode": cfg.examples,
                  "batch_size": cfg.batch_size, "hidden": cfg.model_params.get("hidden")})
        if label.startswith("reference"):
            r["speedup_vs_reference_train"] = round(r["examples_per_s"] / REFERENCE_TRAIN_SESSIONS_PER_S, 1)
            r["speedup_vs_reference_eval"] = round(r["eval_per_s"] / REFERENCE_EVAL_SESSIONS_PER_S[1], 1)
        rows.append(r)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result = {"benchmark": "train", "dataset": dataset, "device": str(device), "machine": machine(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "n_items": data.n_items,
              "bf16": bf16 and device.type == "cuda", "compile": compile, "rows": rows,
              "reference": {"train_sessions_per_s": REFERENCE_TRAIN_SESSIONS_PER_S,
                            "eval_sessions_per_s": REFERENCE_EVAL_SESSIONS_PER_S}}
    result["json_path"] = str(save_result(f"train-{dataset}-{device.type}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.core.text import table
    rows, setups = [], []
    for r in result["rows"]:
        setup = f"{r['loss']}, {r['examples_mode']}, batch {r['batch_size']}, dim {r['hidden']}"
        if setup not in setups:
            setups.append(setup)
        rows.append([f"{r['config']} [{setups.index(setup) + 1}]", r["examples_per_s"], r["seconds_per_step"],
                     r["epoch_seconds"], "yes" if r["epoch_measured"] else "proj.", r["eval_per_s"],
                     r.get("speedup_vs_reference_train")])
    m = result["machine"]
    legend = "; ".join(f"[{i + 1}] {s}" for i, s in enumerate(setups))
    return table(f"training throughput on {result['dataset']} ({result['n_items']:,} items), device "
                 f"{result['device']} ({m.get('gpu') or m.get('cpu')}, {m.get('cpus')} cpus, "
                 f"torch threads {m.get('torch_threads')})",
                 ["config", "train ex/s", "s/step", "s/epoch", "full epoch", "eval ex/s", "x ref."], rows,
                 caption=f"{legend}\njson: {result['json_path']}")
