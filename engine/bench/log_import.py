"""Import benchmark: a shop-style log (Parquet, a user column, no session column, ISO-8601 times)
read by the events format and built into a dataset, per stage time and peak memory.

The log is the demo of a size (default `xl`, ~30M events, YooChoose-full's shape) rewritten once,
streamed, as a warehouse would export it: `user_id` (int64), `product_id` (int64), `event_type`
(text) and `ts` (text like `2015-05-03 03:00:03.495Z`), in row groups of 1M rows. It is kept beside
the demo's CSV in the workspace (`datasets/bench-demo-<size>/source/`, never in git). The build is
`sessrec data import FILE --format events --columns item=product_id,time=ts,user=user_id,
event=event_type` (sessions from the user's 30-minute gaps), every stage forced. Target on the
2-core machine for xl: the whole import within 120 s and 8 GB of peak RSS.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.bench.measure import machine, measure, rss_mb, save_result
from engine.bench.pipeline import ensure_demo, loadavg, timed_build
from engine.core.config import DataConfig
from engine.core.workspace import Workspace
from engine.data.manifest import Dataset
from engine.data.pipeline import summary_stats

TARGETS: dict[str, tuple[float, float]] = {"xl": (120.0, 8 * 1024)}
DEFAULT_TARGET = (20.0, 3 * 1024)          # other sizes: the full demo's pipeline targets
COLUMNS = "item=product_id,time=ts,user=user_id,event=event_type"


def write_shop_log(csv_path: Path, out: Path) -> dict[str, Any]:
    """The demo's RetailRocket CSV as a shop's Parquet export (see the module docstring), streamed."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from engine.core.atomic import atomic_path
    from engine.data.demo.generator import CSV_HEADER
    schema = pa.schema([("user_id", pa.int64()), ("product_id", pa.int64()), ("event_type", pa.string()),
                        ("ts", pa.string())])
    rows = 0
    with measure() as m, atomic_path(out) as tmp:
        reader = pacsv.open_csv(csv_path, read_options=pacsv.ReadOptions(skip_rows=1, block_size=64 << 20,
                                                                           column_names=CSV_HEADER.split(",")),
                                convert_options=pacsv.ConvertOptions(
                                    include_columns=["timestamp", "visitorid", "event", "itemid"],
                                    column_types={"timestamp": pa.int64(), "visitorid": pa.int64(),
                                                  "itemid": pa.int64()}))
        with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for b in reader:
                w.write_table(pa.table([b.column("visitorid"), b.column("itemid"), b.column("event"),
                                        b.column("timestamp").cast(pa.timestamp("ms", tz="UTC"))
                                        .cast(pa.string())], schema=schema),
                              row_group_size=1 << 20)
                rows += b.num_rows
    return {"rows": rows, "seconds": round(m.seconds, 2), "peak_rss_mb": round(m.peak_rss_mb, 1),
            "bytes": out.stat().st_size}


def run(ws: Workspace, size: str = "xl", log=print, out: Path | None = None) -> dict[str, Any]:
    demo = ensure_demo(ws, size, log=log)
    log_path = demo.paths.source_dir / "events-shop.parquet"
    written = None
    if not log_path.exists():
        log(f"writing the {size} demo as a shop's Parquet log {log_path} (cached for later runs) ...")
        written = write_shop_log(demo.paths.demo_events, log_path)
        log(f"  {written['rows']:,} rows in {written['seconds']}s")
    name = f"bench-import-{size}"
    cfg = DataConfig(format="events", columns=COLUMNS)
    ds = Dataset.create(ws, name, log_path, cfg, overwrite=not ws.dataset(name).exists)
    load_before = loadavg()
    base_mb = rss_mb()
    rows, total = timed_build(ws, ds.name)
    ds = Dataset.load(ws, name)
    target_s, target_mb = TARGETS.get(size, DEFAULT_TARGET)
    peak_mb = max(r["peak_rss_mb"] for r in rows)
    ingest = next(r for r in rows if r["stage"] == "ingest")
    reader = ds.stage_record("ingest")["stats"]["reader"]
    result = {
        "benchmark": "import", "size": size, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "load_average": {"before": load_before, "after": loadavg()},
        "file": str(log_path), "file_bytes": log_path.stat().st_size, "columns": COLUMNS,
        "time_read_as": reader.get("time", {}).get("read_as"), "rows": reader["rows_read"],
        "bad_rows": reader["bad_rows"], "stages": rows,
        "ingest_seconds": ingest["seconds"], "ingest_peak_rss_mb": ingest["peak_rss_mb"],
        "total_seconds": round(total.seconds, 2), "peak_rss_mb": round(peak_mb, 1),
        "base_rss_mb": round(base_mb, 1), "targets": {"seconds": target_s, "rss_mb": target_mb},
        "dataset": summary_stats(ds),
    }
    if written:
        result["written"] = written
    result["meets_targets"] = total.seconds <= target_s and peak_mb <= target_mb
    result["json_path"] = str(save_result(f"import-{size}", result, out))
    return result


def render(result: dict[str, Any]):
    from engine.core.text import table
    rows = [[r["stage"], r["seconds"], r["peak_rss_mb"]] for r in result["stages"]]
    rows.append(["total", result["total_seconds"], result["peak_rss_mb"]])
    ds = result["dataset"]
    cap = (f"{result['rows']:,} rows ({result['file_bytes'] / 2**20:,.0f} MiB Parquet; time read as "
           f"{result['time_read_as']}) -> {ds.get('sessions', 0):,} sessions; target <= "
           f"{result['targets']['seconds']:.0f}s and <= {result['targets']['rss_mb'] / 1024:.0f} GB: "
           f"{'met' if result['meets_targets'] else 'NOT met'}; load average before "
           f"{result['load_average']['before']}; json: {result['json_path']}")
    m = result["machine"]
    return table(f"import benchmark ({result['size']} demo as a shop's Parquet log) on {m.get('cpu', '?')} "
                 f"x{m.get('cpus')}", ["stage", "seconds", "peak RSS MB"], rows, caption=cap)
