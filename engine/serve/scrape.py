"""The app's view of a running `sessrec serve`: its Prometheus metrics read into a `MetricsSnapshot`,
the rates between two snapshots (requests/s, 4xx and 5xx errors, p50/p99 latency estimated from
the histogram buckets as Prometheus' `histogram_quantile` does), and small HTTP calls (/metrics,
/health, /admin/reload) that return None or an error message instead of raising: a server that is
starting, stopping or gone must never take the UI down.

Standard library only, besides `prometheus_client`'s text parser (imported when a text is parsed).
"""

from __future__ import annotations

import bisect
import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from engine.serve.security import KEY_HEADER

REQUESTS = "sessrec_requests"                       # the parser drops a counter's `_total`
DURATION = "sessrec_request_duration_seconds"
MODEL_INFO = "sessrec_model_info"
RELOADS = "sessrec_reloads"
TIMEOUT_S = 1.0


# ---- one scrape ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (ascending, the last +Inf), as exposed."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float = 0.0
    count: float = 0.0

    def minus(self, prev: "Histogram | None") -> "Histogram":
        """The observations since `prev` (all of them when the buckets differ or the counter was
        reset, i.e. the server restarted: Prometheus' rule for counters)."""
        if prev is None or prev.bounds != self.bounds or prev.count > self.count \
                or any(p > c for p, c in zip(prev.counts, self.counts)):
            return self
        return Histogram(self.bounds, tuple(c - p for c, p in zip(self.counts, prev.counts)),
                         self.sum - prev.sum, self.count - prev.count)

    def plus(self, other: "Histogram") -> "Histogram":
        """Two endpoints' histograms together (same buckets; else the first one alone)."""
        if other.bounds != self.bounds:
            return self
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts)),
                         self.sum + other.sum, self.count + other.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: find the bucket holding rank q*total and interpolate
        linearly inside it (from 0 for the first bucket); a rank in the +Inf bucket gives the
        highest finite bound. None without observations."""
        if not self.bounds or not math.isinf(self.bounds[-1]):
            return None
        # Prometheus makes the counts monotonic first (scrapes race with observations)
        cum, top = [], 0.0
        for c in self.counts:
            top = max(top, c)
            cum.append(top)
        total = cum[-1]
        if total <= 0 or not 0.0 <= q <= 1.0:
            return None
        rank = q * total
        b = bisect.bisect_left(cum, rank)          # the first bucket whose count reaches the rank
        b = min(b, len(cum) - 1)
        if b == len(cum) - 1:
            return self.bounds[-2] if len(self.bounds) > 1 else None
        if b == 0 and self.bounds[0] <= 0:
            return self.bounds[0]
        lo = 0.0 if b == 0 else self.bounds[b - 1]
        below = 0.0 if b == 0 else cum[b - 1]
        inside = cum[b] - below
        return lo + (self.bounds[b] - lo) * ((rank - below) / inside if inside > 0 else 1.0)


@dataclass
class MetricsSnapshot:
    """What one /metrics text says. `requests[endpoint][status]` and `latency[endpoint]` are
    cumulative since the server started; `model` is the labels of the model-info gauge."""

    requests: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: dict[str, Histogram] = field(default_factory=dict)
    model: dict[str, str] | None = None
    reloads: dict[str, float] = field(default_factory=dict)

    @property
    def endpoints(self) -> list[str]:
        return sorted(set(self.requests) | set(self.latency))


def parse_metrics(text: str) -> MetricsSnapshot:
    """A snapshot of the exposition `text`; ValueError when it is not Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families
    snap = MetricsSnapshot()
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if fam.name == REQUESTS and s.name == REQUESTS + "_total":
                ep, status = s.labels.get("endpoint", "?"), s.labels.get("status", "?")
                snap.requests.setdefault(ep, {})[status] = s.value
            elif fam.name == DURATION:
                ep = s.labels.get("endpoint", "?")
                if s.name == DURATION + "_bucket":
                    buckets.setdefault(ep, {})[float(s.labels["le"])] = s.value
                elif s.name == DURATION + "_sum":
                    sums[ep] = s.value
                elif s.name == DURATION + "_count":
                    counts[ep] = s.value
            elif fam.name == MODEL_INFO and s.value == 1:
                snap.model = dict(s.labels)
            elif fam.name == RELOADS and s.name == RELOADS + "_total":
                snap.reloads[s.labels.get("result", "?")] = s.value
    for ep, by_le in buckets.items():
        bounds = tuple(sorted(by_le))
        cum = tuple(by_le[b] for b in bounds)
        snap.latency[ep] = Histogram(bounds, cum, sums.get(ep, 0.0), counts.get(ep, cum[-1] if cum else 0.0))
    return snap


# ---- between two scrapes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """One endpoint (or all of them) over an interval. Latencies in seconds, None without requests."""

    requests: float            # requests in the interval
    per_s: float
    errors_4xx: float
    errors_5xx: float
    p50: float | None
    p99: float | None


def _delta(cur: float, prev: float | None) -> float:
    """A counter's increase; a smaller value means the server restarted (counted from zero)."""
    return cur if prev is None or cur < prev else cur - prev


def rates(prev: MetricsSnapshot | None, cur: MetricsSnapshot, seconds: float,
          endpoint: str | None = "/recommend") -> Rates:
    """Requests/s, errors and latency quantiles of `endpoint` (None: every endpoint) between two
    snapshots taken `seconds` apart (`prev` None: since the server started)."""
    eps = [endpoint] if endpoint is not None else cur.endpoints
    n = e4 = e5 = 0.0
    hist: Histogram | None = None
    for ep in eps:
        before = (prev.requests.get(ep) if prev is not None else None) or {}
        for status, v in (cur.requests.get(ep) or {}).items():
            d = _delta(v, before.get(status))
            n += d
            if status.startswith("4"):
                e4 += d
            elif status.startswith("5"):
                e5 += d
        h = cur.latency.get(ep)
        if h is not None:
            h = h.minus(prev.latency.get(ep) if prev is not None else None)
            hist = h if hist is None else hist.plus(h)
    has = hist is not None and hist.count > 0
    return Rates(n, n / seconds if seconds > 0 else 0.0, e4, e5,
                 hist.quantile(0.5) if has else None, hist.quantile(0.99) if has else None)


# ---- HTTP (never raises) -------------------------------------------------------------------------
def _request(url: str, *, data: dict | None = None, api_key: str | None = None,
             timeout: float = TIMEOUT_S) -> tuple[int, bytes]:
    headers = {"Accept": "*/*"}
    body = None
    if data is not None:
        body = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    if api_key:
        headers[KEY_HEADER] = api_key
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:          # an answer, with a status the caller reports
        try:
            return e.code, e.read()
        finally:
            e.close()


def fetch_metrics(base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> MetricsSnapshot | None:
    """GET /metrics, parsed; None when the server does not answer with metrics."""
    try:
        status, body = _request(base_url.rstrip("/") + "/metrics", api_key=api_key, timeout=timeout)
        return parse_metrics(body.decode("utf-8", "replace")) if status == 200 else None
    except Exception:                 # refused, timed out, reset, not Prometheus text: no numbers now
        return None


def fetch_health(base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> dict | None:
    """GET /health as a dict; None when the server does not answer with JSON."""
    try:
        status, body = _request(base_url.rstrip("/") + "/health", api_key=api_key, timeout=timeout)
        data = json.loads(body)
        return data if status == 200 and isinstance(data, dict) else None
    except Exception:
        return None


def request_reload(base_url: str, target: str | None, api_key: str | None = None,
                   timeout: float = 5.0, arm: str | None = None) -> tuple[bool, str]:
    """POST /admin/reload {"target": ..., "arm": ...} (arm: an A/B server's): (accepted, what the
    server said or why it failed)."""
    try:
        status, body = _request(base_url.rstrip("/") + "/admin/reload",
                                data={"target": target, **({"arm": arm} if arm else {})},
                                api_key=api_key, timeout=timeout)
    except Exception as e:
        return False, f"{base_url}: {getattr(e, 'reason', None) or e}"
    text = body.decode("utf-8", "replace").strip()
    try:
        msg = json.loads(text)
        if isinstance(msg, dict):
            text = str(msg.get("detail") or msg.get("error") or msg.get("status") or text)
    except json.JSONDecodeError:
        pass
    if status in (200, 202):
        return True, text or "reload started"
    return False, f"HTTP {status}" + (f": {text[:200]}" if text else "")
