"""Pipeline benchmark: demo logs from events.csv to PE, per stage, at one or several sizes.

Generates each demo once (cached), then runs every stage of the real pipeline (forced) and reports
wall time and peak RSS per stage. Targets on a 2-core machine: full (RetailRocket scale, 2.75M
events) <= 20 s and <= 3 GB; xl (YooChoose-full shape, 30M events) <= 120 s and <= 8 GB. With
several sizes (`run_sizes`) one table puts them side by side with events per second and peak bytes
per event, so that growth with the number of events shows (the aim: linear).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from engine.bench.measure import machine, measure, rss_mb, save_result
from engine.core.config import DataConfig
from engine.core.workspace import Workspace
from engine.data import pipeline
from engine.data.manifest import Dataset

TARGET_SECONDS = 20.0
TARGET_RSS_MB = 3 * 1024
# per size: (seconds, peak RSS MB); sizes not listed use the full demo's
TARGETS: dict[str, tuple[float, float]] = {"full": (TARGET_SECONDS, TARGET_RSS_MB),
                                           "xl": (120.0, 8 * 1024)}


def ensure_demo(ws: Workspace, size: str, seed: int = 0, log=print,
                generated: dict | None = None) -> Dataset:
    """The bench dataset of demo `size`, generating its log once; a generation's time and peak
    RSS go into `generated` when given."""
    from engine.data.demo import generate_demo
    name = f"bench-demo-{size}"
    paths = ws.dataset(name)
    if not paths.demo_events.exists() or not paths.demo_truth.exists():
        log(f"generating the {size} demo once into {paths.source_dir} (cached for later runs) ...")
        with measure() as m:
            generate_demo(paths.demo_events, paths.demo_truth, size=size, seed=seed)
        log(f"  generated in {m.seconds:.1f}s, peak RSS {m.peak_rss_mb:,.0f} MB")
        if generated is not None:
            generated.update(seconds=round(m.seconds, 2), peak_rss_mb=round(m.peak_rss_mb, 1))
    return Dataset.create(ws, name, paths.demo_events, DataConfig(format="retailrocket"),
                          demo={"size": size, "seed": seed}, overwrite=not paths.exists)


def timed_build(ws: Workspace, name: str, include_oracle: bool = False) -> tuple[list[dict[str, Any]], Any]:
    """Build dataset `name` from scratch (every stage forced), timing each stage: (a row per stage
    with its seconds and peak RSS, the whole build's measurement)."""
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
            pipeline.build(Dataset.load(ws, name), force=True)
    finally:
        pipeline.STAGES = original
    return rows, total


def run(ws: Workspace, size: str = "full", log=print, out: Path | None = None,
        include_oracle: bool = False, save: bool = True) -> dict[str, Any]:
    generated: dict = {}
    ds = ensure_demo(ws, size, log=log, generated=generated)
    load_before = loadavg()
    base_mb = rss_mb()   # imports and earlier sizes: not the pipeline's own growth
    rows, total = timed_build(ws, ds.name, include_oracle)
    ds = Dataset.load(ws, ds.name)
    stages_s = sum(r["seconds"] for r in rows)
    summary = pipeline.summary_stats(ds)
    target_s, target_mb = TARGETS.get(size, TARGETS["full"])
    events = int(summary.get("raw_events") or 0)
    peak_mb = max(r["peak_rss_mb"] for r in rows)
    result = {
        "benchmark": "pipeline", "size": size, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "load_average": {"before": load_before, "after": loadavg()},
        "stages": rows,
        "total_seconds": round(stages_s, 2), "total_with_io_seconds": round(total.seconds, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "events": events,
        "events_per_second": round(events / max(total.seconds, 1e-9)),
        "peak_bytes_per_event": round(peak_mb * 2**20 / max(events, 1), 1),
        "base_rss_mb": round(base_mb, 1),
        # what the pipeline adds to the process, per event: the figure that should stay flat
        "added_bytes_per_event": round(max(peak_mb - base_mb, 0.0) * 2**20 / max(events, 1), 1),
        "targets": {"seconds": target_s, "rss_mb": target_mb},
        "dataset": summary,
        "reference_seconds": {"sessionize": 12, "split": 7, "graph": "45-65", "encodings": 25, "total": "90-110"},
    }
    if generated:
        result["generation"] = generated
    result["meets_targets"] = result["total_with_io_seconds"] <= target_s and peak_mb <= target_mb
    if save:
        result["json_path"] = str(save_result(f"pipeline-{size}", result, out))
    return result


def run_sizes(ws: Workspace, sizes: list[str], log=print, out: Path | None = None,
              include_oracle: bool = False) -> dict[str, Any]:
    """`run` for each size in turn (one process: each stage's peak is reset before it starts and
    freed memory is handed back between stages), saved as one JSON."""
    runs = []
    for size in sizes:
        log(f"pipeline benchmark: {size} demo ...")
        runs.append(run(ws, size, log=log, include_oracle=include_oracle, save=False))
    result = {"benchmark": "pipeline", "sizes": list(sizes), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine(), "runs": runs,
              "meets_targets": all(r["meets_targets"] for r in runs)}
    result["json_path"] = str(save_result("pipeline-" + "-".join(sizes), result, out))
    return result


def loadavg() -> list[float] | None:
    # the machine may be shared: the load next to a timing says how much of it was ours
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def render(result: dict[str, Any]):
    from engine.core.text import table
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


def render_sizes(result: dict[str, Any]):
    """One table: a row per stage, seconds and peak RSS per size, then the per-event growth."""
    from engine.core.text import table
    runs = result["runs"]
    stages: list[str] = []
    for r in runs:
        stages += [row["stage"] for row in r["stages"] if row["stage"] not in stages]
    cols = ["stage"] + [c for r in runs for c in (f"{r['size']} s", f"{r['size']} MB")]
    rows = []
    for st in stages:
        cells: list[Any] = [st]
        for r in runs:
            row = next((x for x in r["stages"] if x["stage"] == st), None)
            cells += [row["seconds"], row["peak_rss_mb"]] if row else ["-", "-"]
        rows.append(cells)
    rows.append(["total"] + [v for r in runs for v in (r["total_with_io_seconds"], r["peak_rss_mb"])])
    rows.append(["events"] + [v for r in runs for v in (r["events"], "")])
    rows.append(["events/s, B/event"] + [v for r in runs
                                          for v in (r["events_per_second"], r["added_bytes_per_event"])])
    rows.append(["target s, MB"] + [v for r in runs
                                     for v in (r["targets"]["seconds"], r["targets"]["rss_mb"])])
    loads = "; ".join(f"{r['size']} {r.get('load_average', {}).get('before')}" for r in runs)
    cap = ("B/event: peak RSS above the RSS before the build, per raw event; "
           f"targets {'met' if result['meets_targets'] else 'NOT met'}; load average before each "
           f"size (1/5/15 min): {loads}; json: {result['json_path']}")
    m = result["machine"]
    return table(f"pipeline benchmark by size on {m.get('cpu', '?')} x{m.get('cpus')}", cols, rows,
                 caption=cap)
