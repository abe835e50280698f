"""Pipeline benchmark: the `full` demo (RetailRocket scale) from events.csv to PE, per stage.

Generates the demo once (cached), then runs every stage of the real pipeline (forced) and reports
wall time and peak RSS per stage. Target on a 2-core machine: <= 20 s and <= 3 GB in all.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from engine.bench.measure import machine, measure, save_result
from engine.config import DataConfig
from engine.data import pipeline
from engine.data.manifest import Dataset
from engine.workspace import Workspace

TARGET_SECONDS = 20.0
TARGET_RSS_MB = 3 * 1024


def ensure_demo(ws: Workspace, size: str, seed: int = 0, log=print) -> Dataset:
    from engine.data.demo import generate_demo
    name = f"bench-demo-{size}"
    paths = ws.dataset(name)
    if not paths.demo_events.exists() or not paths.demo_truth.exists():
        log(f"generating the {size} demo once into {paths.source_dir} (cached for later runs) ...")
        with measure() as m:
            generate_demo(paths.demo_events, paths.demo_truth, size=size, seed=seed)
        log(f"  generated in {m.seconds:.1f}s")
    return Dataset.create(ws, name, paths.demo_events, DataConfig(format="retailrocket"),
                          demo={"size": size, "seed": seed}, overwrite=not paths.exists)


def run(ws: Workspace, size: str = "full", log=print, out: Path | None = None,
        include_oracle: bool = False) -> dict[str, Any]:
    ds = ensure_demo(ws, size, log=log)
    rows: list[dict[str, Any]] = []

    def wrap(stage: pipeline.Stage) -> pipeline.Stage:
        def timed(ctx: pipeline.StageContext) -> dict:
            with measure() as m:
                stats = stage.run(ctx)
            rows.append({"stage": stage.name, "seconds": round(m.seconds, 3),
                         "peak_rss_mb": round(m.peak_rss_mb, 1), "start_rss_mb": round(m.start_rss_mb, 1)})
            return stats
        return dataclasses.replace(stage, run=timed)

    original = pipeline.STAGES
    pipeline.STAGES = tuple(wrap(s) for s in original if include_oracle or not s.only_demo)
    try:
        with measure() as total:
            pipeline.build(Dataset.load(ws, ds.name), force=True)
    finally:
        pipeline.STAGES = original
    ds = Dataset.load(ws, ds.name)
    stages_s = sum(r["seconds"] for r in rows)
    summary = pipeline.summary_stats(ds)
    result = {
        "benchmark": "pipeline", "size": size, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "stages": rows,
        "total_seconds": round(stages_s, 2), "total_with_io_seconds": round(total.seconds, 2),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rows), 1),
        "targets": {"seconds": TARGET_SECONDS, "rss_mb": TARGET_RSS_MB},
        "dataset": summary,
        "reference_seconds": {"sessionize": 12, "split": 7, "graph": "45-65", "encodings": 25, "total": "90-110"},
    }
    result["meets_targets"] = result["total_with_io_seconds"] <= TARGET_SECONDS and \
        result["peak_rss_mb"] <= TARGET_RSS_MB
    result["json_path"] = str(save_result(f"pipeline-{size}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.cli.output import table
    ref = result["reference_seconds"]
    rows = [[r["stage"], r["seconds"], r["peak_rss_mb"], ref.get(r["stage"], "-")] for r in result["stages"]]
    rows.append(["total", result["total_with_io_seconds"], result["peak_rss_mb"], ref["total"]])
    ds = result["dataset"]
    cap = (f"{ds.get('raw_events', 0):,} events -> {ds.get('sessions', 0):,} sessions, "
           f"{ds.get('graph_nodes', 0):,} nodes / {ds.get('graph_edges', 0):,} edges; target <= "
           f"{result['targets']['seconds']:.0f}s and <= {result['targets']['rss_mb'] / 1024:.0f} GB: "
           f"{'met' if result['meets_targets'] else 'NOT met'}; json: {result['json_path']}")
    return table(f"pipeline benchmark ({result['size']} demo) on {result['machine'].get('cpu', '?')} "
                 f"x{result['machine'].get('cpus')}", ["stage", "seconds", "peak RSS MB", "reference s"],
                 rows, caption=cap)
