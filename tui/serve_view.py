"""What the Serve screen shows, without widgets (tested directly): the targets a server can serve,
the sample request and its `curl` line, and the live numbers read from a server's /metrics."""

from __future__ import annotations

from rich.text import Text

from engine.core.errors import InputError
from engine.core.schema import JobStatus
from engine.core.schema import ModelKind
from engine.core.target import Target
from engine.serve.security import KEY_ENV as SERVE_KEY_ENV
from tui.format import fmt_duration

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


def sample_names(ws, dataset: str | None, items: list[int]) -> dict[int, str]:
    """Names of the sample items from the dataset's item metadata ({} without it): the Serve screen
    says what the sample request asks about."""
    if not dataset or not items:
        return {}
    try:
        import pyarrow.parquet as pq
        t = pq.read_table(ws.dataset(dataset).item_meta, columns=["raw_id", "name"],
                          filters=[("raw_id", "in", list(items))])
        return {int(r): n for r, n in zip(t.column("raw_id").to_pylist(), t.column("name").to_pylist()) if n}
    except Exception:                # no metadata stage built: ids only
        return {}


def names_line(items: list[int], names: dict[int, str]) -> str:
    """'52: soft candle, 80: classic drill' ('' when no item has a name)."""
    return ", ".join(f"{i}: {names[i]}" for i in items if names.get(i))


def curl_line(url: str, items: list[int], key: str | None, ab: bool = False) -> str:
    """A request to paste in a shell. With a key, the header reads it from $SESSREC_API_KEY (the
    screen never prints the key); `copy_line` fills it in."""
    ids = ", ".join(str(i) for i in items) if items else "ID1, ID2"
    hdr = f' -H "X-API-Key: ${SERVE_KEY_ENV}"' if key else ""
    return (f"curl -s -X POST {url.rstrip('/')}/recommend -H 'Content-Type: application/json'{hdr} "
            f"-d '{{\"session_items\": [{ids}], \"k\": 10"
            + (', \"session_id\": \"visitor-1\"' if ab else "") + "}'")


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


def head_text(job, health: dict | None, snapshot, show_timings: bool = True) -> Text:
    """The head of the live panel: what is served where, since when, the reload state."""
    if job is None:
        return Text("No server running. Pick a finished run or a baseline, then ctrl+s: "
                    "`sessrec serve` runs as a background job (F3 shows its log).", style="dim")
    t = Text()
    if not job.running:
        style = "red" if job.status == JobStatus.FAILED else "yellow"
        t.append(f"{job.title}: {job.status}", style=style)
        if job.error:
            t.append(f"\n{job.error}", style="red")
        return t
    sv = job.serving
    if not sv:
        t.append(f"{job.title}: starting (loading the model) ...", style="cyan")
        return t
    h = health or {}
    t.append("serving ", style="bold green")
    t.append(f"{sv.get('url')}", style="bold")
    if job.status == JobStatus.STOPPING:
        t.append("  stopping", style="yellow")
    exp = h.get("experiment") or sv.get("experiment")
    if exp:                          # an A/B server: its arms are in the panel below
        t.append(f"\nA/B test of {' and '.join(a['target'] for a in exp['arms'])} on {h.get('dataset') or sv.get('dataset')}")
    else:
        model = h.get("model") or sv.get("model")
        run = h.get("run_id") or sv.get("run_id")
        t.append(f"\n{model} on {h.get('dataset') or sv.get('dataset')}" + (f", run {run}" if run else ""))
    if h.get("n_items") is not None:
        t.append(f", {h['n_items']:,} items")
    t.append(f"\n{h.get('runtime') or sv.get('runtime')}" + (f" on {h['device']}" if h.get("device") else ""))
    if h.get("uptime_s") is not None and show_timings:
        t.append(f", up {fmt_duration(h['uptime_s'])}")
    t.append(", API key required" if sv.get("api_key_required") else ", no API key")
    if snapshot is not None:
        total = rates_total(snapshot)
        t.append(f", {fmt_count(total)} request{'s' if total != 1 else ''} so far")
    reload = h.get("reload") or {}
    state = reload.get("state")
    if state == "loading":
        t.append("\nreload: loading ...", style="cyan")
    elif state == "failed":
        t.append(f"\nreload failed: {reload.get('error') or '?'}", style="red")
    elif reload.get("finished_at"):
        t.append(f"\nlast reload: {reload['finished_at']}", style="dim")
    if not h:
        t.append("\n/health does not answer", style="yellow")
    return t

