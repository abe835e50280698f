"""engine.serve.scrape: Prometheus texts written by hand, quantiles computed by hand, and the HTTP
helpers against a stdlib server (answers, errors and a closed port never raise)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.serve.scrape import Histogram, fetch_health, fetch_metrics, parse_metrics, rates, request_reload

LE = ("0.005", "0.01", "0.025", "0.05", "0.1", "+Inf")


def metrics_text(requests: dict[tuple[str, str], float], buckets: dict[str, list[float]],
                 total_sum: float = 1.0, reloads: dict[str, float] | None = None) -> str:
    """The exposition prometheus_client writes (with its `_created` lines)."""
    lines = ["# HELP sessrec_requests_total Requests.", "# TYPE sessrec_requests_total counter"]
    lines += [f'sessrec_requests_total{{endpoint="{ep}",status="{st}"}} {v}' for (ep, st), v in requests.items()]
    lines += ["# HELP sessrec_requests_created Requests.", "# TYPE sessrec_requests_created gauge"]
    lines += [f'sessrec_requests_created{{endpoint="{ep}",status="{st}"}} 1.7e9' for ep, st in requests]
    lines += ["# HELP sessrec_request_duration_seconds Latency.",
              "# TYPE sessrec_request_duration_seconds histogram"]
    for ep, counts in buckets.items():
        lines += [f'sessrec_request_duration_seconds_bucket{{endpoint="{ep}",le="{le}"}} {c}'
                  for le, c in zip(LE, counts)]
        lines += [f'sessrec_request_duration_seconds_count{{endpoint="{ep}"}} {counts[-1]}',
                  f'sessrec_request_duration_seconds_sum{{endpoint="{ep}"}} {total_sum}']
    lines += ["# HELP sessrec_model_info Model.", "# TYPE sessrec_model_info gauge",
              'sessrec_model_info{dataset="demo",model="graph_transformer",run_id="gt-1",runtime="torch"} 1.0',
              "# HELP sessrec_reloads_total Reloads.", "# TYPE sessrec_reloads_total counter"]
    lines += [f'sessrec_reloads_total{{result="{r}"}} {v}' for r, v in (reloads or {}).items()]
    return "\n".join(lines) + "\n"


PREV = metrics_text({("/recommend", "200"): 6, ("/recommend", "400"): 1, ("/health", "200"): 3},
                    {"/recommend": [2, 4, 6, 6, 6, 7], "/health": [3, 3, 3, 3, 3, 3]})
CUR = metrics_text({("/recommend", "200"): 106, ("/recommend", "400"): 4, ("/recommend", "503"): 2,
                    ("/health", "200"): 8},
                   {"/recommend": [12, 44, 86, 96, 106, 107], "/health": [8, 8, 8, 8, 8, 8]},
                   reloads={"ok": 2, "failed": 1})


def test_parse_reads_counts_histograms_model_and_reloads() -> None:
    s = parse_metrics(CUR)
    assert s.requests == {"/recommend": {"200": 106, "400": 4, "503": 2}, "/health": {"200": 8}}
    h = s.latency["/recommend"]
    assert h.bounds == (0.005, 0.01, 0.025, 0.05, 0.1, float("inf"))
    assert h.counts == (12, 44, 86, 96, 106, 107) and h.count == 107
    assert s.model == {"dataset": "demo", "model": "graph_transformer", "run_id": "gt-1", "runtime": "torch"}
    assert s.reloads == {"ok": 2, "failed": 1}
    assert s.endpoints == ["/health", "/recommend"]


def test_rates_between_two_scrapes() -> None:
    r = rates(parse_metrics(PREV), parse_metrics(CUR), 5.0)
    # requests: 100 (200) + 3 (400) + 2 (503, new series) = 105 in 5 s
    assert (r.requests, r.per_s, r.errors_4xx, r.errors_5xx) == (105, 21.0, 3, 2)
    # bucket deltas [10, 40, 80, 90, 100, 100]: rank 50 lies in (0.01, 0.025] with 40 below and 40
    # inside -> 0.01 + 0.015 * 10/40; rank 99 lies in (0.05, 0.1], 90 below, 10 inside -> 0.05 + 0.05 * 9/10
    assert r.p50 == pytest.approx(0.01375)
    assert r.p99 == pytest.approx(0.095)


def test_rates_of_every_endpoint_together() -> None:
    r = rates(parse_metrics(PREV), parse_metrics(CUR), 5.0, endpoint=None)
    assert r.requests == 110 and r.per_s == 22.0
    # /health's 5 requests are in the first bucket: deltas [15, 45, 85, 95, 105, 105]; rank 52.5 in
    # (0.01, 0.025]: 0.01 + 0.015 * 7.5/40
    assert r.p50 == pytest.approx(0.01 + 0.015 * 7.5 / 40)


def test_rates_since_start_without_requests_and_after_a_restart() -> None:
    cur = parse_metrics(CUR)
    quiet = rates(cur, cur, 1.0)
    assert (quiet.requests, quiet.per_s, quiet.p50, quiet.p99) == (0, 0.0, None, None)
    # prev None: everything since the start
    assert rates(None, cur, 10.0).requests == 112
    # a restarted server's counters are smaller than before: counted from zero
    restarted = parse_metrics(metrics_text({("/recommend", "200"): 4}, {"/recommend": [4, 4, 4, 4, 4, 4]}))
    r = rates(cur, restarted, 2.0)
    assert (r.requests, r.per_s) == (4, 2.0)
    assert r.p50 == pytest.approx(0.0025)          # rank 2 of 4 in (0, 0.005]
    assert rates(cur, parse_metrics(metrics_text({}, {})), 1.0).p50 is None


def test_quantile_edges() -> None:
    inf = float("inf")
    slow = Histogram((0.1, 1.0, inf), (0, 0, 5), count=5)
    assert slow.quantile(0.5) == 1.0               # in the +Inf bucket: the highest finite bound
    assert Histogram((0.1, 1.0, inf), (2, 4, 4), count=4).quantile(0.99) == pytest.approx(0.1 + 0.9 * 1.96 / 2)
    assert Histogram((0.1, inf), (0, 0)).quantile(0.5) is None
    # counts that are not monotonic (a scrape raced an observation) are made monotonic first
    assert Histogram((0.1, 0.2, inf), (4, 3, 4), count=4).quantile(0.5) == pytest.approx(0.05)


# ---- HTTP ----------------------------------------------------------------------------------------
class FakeServer:
    """A stdlib HTTP server in a thread: /health and /metrics answer texts the test sets; POSTs are
    recorded and answered 202 with the right X-API-Key, else 401 (the Serve screen's tests use it too)."""

    def __init__(self, metrics: str, health: dict, key: str) -> None:
        self.metrics, self.health, self.key = metrics, health, key
        self.posts: list[tuple[str, str | None, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, fake.metrics, "text/plain; version=0.0.4")
                elif self.path == "/health":
                    self._send(200, json.dumps(fake.health))
                else:
                    self._send(404, '{"detail": "not found"}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.posts.append((self.path, self.headers.get("X-API-Key"), body))
                if self.headers.get("X-API-Key") != fake.key:
                    self._send(401, '{"detail": "missing or wrong X-API-Key"}')
                else:
                    self._send(202, '{"status": "loading"}')

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def fake():
    srv = FakeServer(CUR, {"status": "ok", "run_id": "gt-1"}, "s3cret")
    yield srv
    srv.close()


@pytest.fixture
def server(fake) -> str:
    return fake.url


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_fetch_metrics_and_health(server: str) -> None:
    snap = fetch_metrics(server)
    assert snap is not None and snap.requests["/recommend"]["200"] == 106
    assert fetch_health(server + "/") == {"status": "ok", "run_id": "gt-1"}


def test_http_errors_are_none_not_exceptions(server: str) -> None:
    closed = _closed_port()
    assert fetch_metrics(closed, timeout=0.5) is None
    assert fetch_health(closed, timeout=0.5) is None
    assert fetch_metrics(server + "/nothing") is None                 # a 404
    ok, msg = request_reload(closed, None, timeout=0.5)
    assert not ok and closed in msg


def test_reload_posts_the_target_with_the_key(server: str, fake: FakeServer) -> None:
    assert request_reload(server, "gt-2", api_key="s3cret") == (True, "loading")
    assert request_reload(server, None) == (False, "HTTP 401: missing or wrong X-API-Key")
    assert fake.posts == [("/admin/reload", "s3cret", {"target": "gt-2"}),
                             ("/admin/reload", None, {"target": None})]
