"""What the Serve screen shows, without widgets (tested directly): the targets a server can serve,
the sample request and its `curl` line, and the live numbers read from a server's /metrics."""

from __future__ import annotations

from engine.core.errors import InputError
from engine.core.schema import ModelKind
from engine.core.target import Target
from engine.serve.security import KEY_ENV as SERVE_KEY_ENV

MAIN_ENDPOINT = "/recommend"


def list_targets(controller) -> list[tuple[str, str]]:
    """(label, target) of what can be served: finished GNN runs with a checkpoint (newest first), then
    `baseline:NAME@DATASET` on each built dataset."""
    from engine.data.report import dataset_report
    from engine.models.registry import BASELINES
    out = []
    runs = [r for r in controller.list_runs() if r.kind == ModelKind.GNN and r.status.succeeded
            and controller.can_recommend(r.run_id)]
    for r in sorted(runs, key=lambda r: r.created, reverse=True):
        out.append((f"{r.model} on {r.dataset}: {r.run_id}", r.run_id))
    ws = controller.ws
    for name in ws.dataset_names():
        if dataset_report(ws, name).built:
            out += [(f"baseline {b} on {name}", str(Target.of_baseline(b, name))) for b in BASELINES]
    return out


def target_dataset(controller, target: str) -> str | None:
    try:
        t = Target.parse(target)
    except InputError:
        return None
    if t.is_baseline:
        return t.dataset
    st = controller.run_state(t.run_id)
    return st.dataset if st is not None else None


def sample_items(ws, dataset: str | None, n: int = 2) -> list[int]:
    """The `n` most popular item ids of a built dataset (its item index is in popularity order);
    [] when it cannot be read cheaply."""
    if not dataset:
        return []
    try:
        import pyarrow.parquet as pq
        path = ws.dataset(dataset).items
        pf = pq.ParquetFile(path)
        if pf.metadata.num_row_groups == 0:
            return []
        col = pf.read_row_group(0, columns=["raw_id"]).column("raw_id")
        return [int(v) for v in col.slice(0, n).to_pylist()]
    except Exception:                # not built, moved, unreadable: the curl line has placeholders
        return []


def curl_line(url: str, items: list[int], key: str | None) -> str:
    """A request to paste in a shell. With a key, the header reads it from $SESSREC_API_KEY (the
    screen never prints the key); `copy_line` fills it in."""
    ids = ", ".join(str(i) for i in items) if items else "ID1, ID2"
    hdr = f' -H "X-API-Key: ${SERVE_KEY_ENV}"' if key else ""
    return (f"curl -s -X POST {url.rstrip('/')}/recommend -H 'Content-Type: application/json'{hdr} "
            f"-d '{{\"session_items\": [{ids}], \"k\": 10}}'")


def copy_line(line: str, key: str | None) -> str:
    """The curl line with the key itself (for the clipboard)."""
    if not key:
        return line
    return line.replace(f'"X-API-Key: ${SERVE_KEY_ENV}"', "'X-API-Key: " + key.replace("'", "'\\''") + "'")


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def fmt_count(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:.1f}"


def stats_rows(prev, cur, seconds: float) -> list[tuple[str, ...]]:
    """One row per endpoint (/recommend first) and one for all of them: req/s, p50 and p99 in
    ms, 4xx and 5xx over the interval."""
    from engine.serve.scrape import rates
    eps = sorted(cur.endpoints, key=lambda e: (e != MAIN_ENDPOINT, e))
    if MAIN_ENDPOINT not in eps:
        eps.insert(0, MAIN_ENDPOINT)
    rows = []
    for ep in [*eps, None]:
        r = rates(prev, cur, seconds, endpoint=ep)
        rows.append((ep or "all", f"{r.per_s:.1f}", fmt_ms(r.p50), fmt_ms(r.p99), fmt_count(r.errors_4xx),
                     fmt_count(r.errors_5xx)))
    return rows


def rates_total(snap) -> float:
    """Requests of every endpoint since the server started."""
    from engine.serve.scrape import rates
    return rates(None, snap, 1.0, endpoint=None).requests
