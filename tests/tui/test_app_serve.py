"""The Serve screen: its key, the runs it offers, Start (argv and environment: the API key never in
argv), live numbers from a fake server (stdlib http.server in a thread) computed by hand, the notice
of a newer run, Reload (posted with the key) and Stop. The fake engine child prints the `serving`
line for the test's server and waits for SIGTERM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import jobs as J
from engine.core.schema import JobKind, JobPolicy, JobStatus
from engine.core.workspace import Workspace
from engine.data.items import ItemIndex
from tests.test_serve_scrape import FakeServer, metrics_text
from tests.tui.conftest import _fake_run, make_app
from tests.tui.helpers import notifications, settle, wait_for
from tui import serve_view as V
from tui.screens import serve as S

KEY = "s3cret-key-0123456789"
# /recommend before and after: +40 answered, +6 not found, +4 failed = 50 requests; bucket deltas
# [0, 0, 20, 30, 40, 50] (le 0.005 0.01 0.025 0.05 0.1 +Inf)
PREV = metrics_text({("/recommend", "200"): 10}, {"/recommend": [2, 5, 10, 10, 10, 10]})
CUR = metrics_text({("/recommend", "200"): 50, ("/recommend", "404"): 6, ("/recommend", "500"): 4},
                   {"/recommend": [2, 5, 30, 40, 50, 60]})
# 50 requests in 5 s -> 10.0/s. p50: rank 25 lies in (0.025, 0.05] with 20 below and 10 inside ->
# 0.025 + 0.025 * 5/10 = 37.5 ms. p99: rank 49.5 > 40 lies in +Inf -> the highest bound, 100 ms.
EXPECTED = ("/recommend", "10.0", "37.5", "100.0", "6", "4")
HEALTH = {"status": "ok", "model": "graph_transformer", "run_id": "run-a", "dataset": "demo-tiny", "n_items": 123,
          "runtime": "torch", "device": "cpu", "version": "0.1", "uptime_s": 12.0, "search": "exact",
          "reload": {"state": "idle", "error": None, "finished_at": None}}


@pytest.fixture
def fake_server():
    srv = FakeServer(PREV, dict(HEALTH), KEY)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_timer_polls(monkeypatch) -> None:
    """The test calls `poll()` itself: every scrape is one the test chose."""
    monkeypatch.setattr(S, "POLL_S", 3600.0)


def _newer_run(ws: Path, run_id: str = "run-d", epochs: int = 6) -> None:
    """A graph_transformer run on demo-tiny that finished after run-a. The fake child's val
    Recall@10 peaks with the epochs: 6 epochs give 0.256 > run-a's 0.236 (4 epochs), 2 give 0.184."""
    _fake_run(ws, run_id, "graph_transformer", epochs)
    cfg_p = ws / "runs" / run_id / "config.json"
    cfg = json.loads(cfg_p.read_text())
    cfg["created"] = "2025-01-01T13:00:00"
    cfg_p.write_text(json.dumps(cfg))


def _cell_texts(table) -> list[tuple[str, ...]]:
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def test_serve_start_live_numbers_reload_and_stop(full_ws: Path, fake_server: FakeServer) -> None:
    app = make_app(full_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f8")
        scr = app.screen
        assert isinstance(scr, S.ServeScreen)
        await wait_for(pilot, lambda: scr.targets)
        keys = [t for _, t in scr.targets]
        # finished GNN runs with a checkpoint, newest first (run-c failed), then baselines
        assert keys[:2] == ["run-b", "run-a"] and "run-c" not in keys
        assert "baseline:sknn@demo-tiny" in keys and keys[2].startswith("baseline:")
        scr.query_one("#s-target").value = "run-a"
        scr.query_one("#s-port").value = str(fake_server.port)
        scr.query_one("#s-key").value = KEY
        scr.action_start()
        job = scr.job
        assert job is not None and job.kind == JobKind.SERVE
        i = job.argv.index("serve")
        assert job.argv[i:] == ["serve", "run-a", "--host", "127.0.0.1", "--port", str(fake_server.port),
                                "--runtime", "torch"]
        assert not any(KEY in a for a in job.argv)
        assert job.env["SESSREC_API_KEY"] == KEY and set(job.env) == {"SESSREC_API_KEY", "SESSREC_ADMIN_KEY"}
        admin = job.env["SESSREC_ADMIN_KEY"]
        assert len(admin) >= 16 and admin != KEY
        assert app.controller.jobs.child_env(job)["SESSREC_API_KEY"] == KEY
        await wait_for(pilot, lambda: job.serving is not None)
        assert job.serving["api_key_required"] is True          # the child found the key in its env
        assert KEY not in app.controller.ws.job_record(job.id).read_text()
        assert admin not in app.controller.ws.job_record(job.id).read_text() and admin not in " ".join(job.argv)
        assert job.threads == 1                                  # a light job (see engine.jobs.LIGHT_KINDS)

        ticks = iter(range(0, 1000, 5))
        scr.clock = lambda: float(next(ticks))                   # scrapes exactly 5 s apart
        scr.poll()
        await wait_for(pilot, lambda: scr.snapshot is not None)
        fake_server.metrics = CUR
        scr.poll()
        # (no settle() while the server runs: its job is a worker that only ends when stopped)
        await wait_for(pilot, lambda: _cell_texts(scr.query_one("#serve-stats"))[:1] == [EXPECTED])
        assert scr.rows[0] == EXPECTED and scr.rows[-1] == ("all", *EXPECTED[1:])
        assert list(scr.rps) == [(5.0, 10.0)]
        head = str(scr.query_one("#serve-head").render())
        assert f"http://127.0.0.1:{fake_server.port}" in head and "run run-a" in head and "123 items" in head
        assert "API key required" in head and "60 requests so far" in head
        items = ItemIndex.read(Workspace.open(full_ws).dataset("demo-tiny").items).raw_ids[:2].tolist()
        curl = str(scr.query_one("#serve-curl").render())
        assert (f"curl -s -X POST http://127.0.0.1:{fake_server.port}/recommend -H 'Content-Type: "
                f"application/json' -H \"X-API-Key: $SESSREC_API_KEY\" -d '{{\"session_items\": "
                f"[{items[0]}, {items[1]}], \"k\": 10}}'") in curl.replace("\n", "")
        assert KEY not in curl
        assert f"'X-API-Key: {KEY}'" in V.copy_line(V.curl_line("http://h:1", items, KEY), KEY)

        # a newer but worse run is no reason to reload; a newer better one is: the screen says so
        _newer_run(full_ws, "run-w", epochs=2)
        app.controller.list_runs()
        worse = app.controller.runs.peek("run-w")
        assert worse is not None and worse.status.succeeded and worse.best_value < app.controller.runs.peek("run-a").best_value
        assert app.controller.newer_run("run-a") is None
        _newer_run(full_ws)
        app.controller.list_runs()
        scr.poll()
        await wait_for(pilot, lambda: any("a better run finished: run-d" in n for n in notifications(app)))
        assert "run-d" in str(scr.query_one("#serve-better").render())
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ReloadScreen")
        await pilot.press("enter")                           # the newer run is highlighted
        await wait_for(pilot, lambda: fake_server.posts)
        assert fake_server.posts == [("/admin/reload", KEY, {"target": "run-d"})]
        await wait_for(pilot, lambda: any("reloading run-d" in n for n in notifications(app)))

        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: job.status.finished, timeout=10)
        assert job.status == JobStatus.DONE and job.returncode == 0     # exit 0 after SIGTERM
        await wait_for(pilot, lambda: any("stopped" in n for n in notifications(app)))
        await settle(pilot)
        assert scr.url() is None and _cell_texts(scr.query_one("#serve-stats")) == []


async def test_serve_form_checks_and_one_server_at_a_time(full_ws: Path, monkeypatch) -> None:
    app = make_app(full_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f8")
        scr = app.screen
        await wait_for(pilot, lambda: scr.targets)
        scr.query_one("#s-port").value = "99999"
        scr.action_start()
        await pilot.pause()
        assert any("port: expected a whole number from 1 to 65535, got '99999'" in n for n in notifications(app))
        assert app.controller.serve_job() is None
        scr.query_one("#s-port").value = "8123"
        for field, value, said, good in (
                ("#s-workers", "0", "workers: expected a whole number from 1 to 64, got '0'", "1"),
                ("#s-host", "0.0.0.0", "host: 0.0.0.0 is reachable from other machines; type an API key", "127.0.0.1"),
                ("#s-key", "short", "API key must be at least 16 characters", ""),
                # issue 21, finding 6: HTTP trims header values, so no client could send this key
                ("#s-key", " " * 16, "API key holds a space or tab at position 1", "")):
            scr.query_one(field).value = value
            scr.action_start()
            await pilot.pause()
            assert any(said in n for n in notifications(app)), said
            assert app.controller.serve_job() is None
            scr.query_one(field).value = good
        scr.query_one("#s-workers").value = "2"
        scr.query_one("#s-search").value = "pq"
        scr.query_one("#s-runtime").value = "onnx"
        scr.action_start()
        job = scr.job
        assert job.argv[job.argv.index("serve"):] == ["serve", "run-b", "--host", "127.0.0.1", "--port", "8123",
                                                      "--runtime", "onnx", "--search", "pq", "--workers", "2"]
        # no API key: only the app's admin-only key (fresh per server), which Reload sends
        assert set(job.env) == {"SESSREC_ADMIN_KEY"} and scr.api_key() is None
        assert scr.admin_key() == job.env["SESSREC_ADMIN_KEY"]
        scr.action_start()
        await pilot.pause()
        assert any("is running: stop it first" in n for n in notifications(app))
        assert app.controller.jobs.active("serve") == [job]
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: job.status.finished, timeout=10)


async def test_a_server_never_waits_in_the_queue_nor_blocks_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    from tests.tui.conftest import FAKE_CHILD
    m = J.JobManager(tmp_path, engine_cmd=FAKE_CHILD, cores=2, settings=J.JobSettings(policy=JobPolicy.QUEUE))
    build = m.start(J.BuildRequest("a"))
    server = m.start(J.ServeRequest("run-a", port=8124))
    assert build.running and server.running and server.threads == 1 and build.threads == 2
    other = m.start(J.BuildRequest("b"))
    assert other.status == JobStatus.QUEUED and other.waiting_for == "build a to end"
    await m.wait(build, 30)
    await m.wait(other, 30)                        # started after `build a`, the server still running
    assert other.status == JobStatus.DONE and server.running
    m.cancel(server)
    await m.wait(server, 10)
    assert server.status == JobStatus.DONE


def test_serve_args() -> None:
    assert J.ServeRequest("baseline:sknn@demo").args() == ["serve", "baseline:sknn@demo", "--host", "127.0.0.1",
                                                           "--port", "8000", "--runtime", "torch"]
    assert J.ServeRequest("r", "0.0.0.0", 9000, "onnx", workers=2, insecure=True).args()[-4:] == \
        ["onnx", "--workers", "2", "--insecure"]


# ---- fixed data for the screenshots (tests/tui/test_snapshots.py) --------------------------------------
def add_running_server(app, port: int = 8000) -> J.Job:
    """A serve job that looks running and serving run-a on 127.0.0.1:PORT, with no process behind
    it (a real job's worker would never let the screenshot's settle() finish)."""
    import time
    m = app.controller.jobs
    jid = "20250101-120000-serve-run-a"
    job = J.Job(id=jid, kind=JobKind.SERVE, title=f"serve run-a on 127.0.0.1:{port}",
                argv=["python", "-m", "engine", *J.ServeRequest("run-a", port=port).args()], log_path=m.ws.job_log(jid),
                status=JobStatus.RUNNING, created=time.time(), started=time.time(), threads=1,
                serving={"type": "serving", "url": f"http://127.0.0.1:{port}", "host": "127.0.0.1", "port": port,
                         "model": "graph_transformer", "run_id": "run-a", "dataset": "demo-tiny",
                         "runtime": "torch", "api_key_required": False})
    m.jobs[jid] = job
    app.controller._jobs_dirty = True
    return job


def show_fixed_numbers(scr: S.ServeScreen) -> None:
    """The screen as after two scrapes 5 s apart (PREV, CUR) and a minute of traffic on the chart."""
    from engine.serve.scrape import parse_metrics
    prev, cur = parse_metrics(PREV), parse_metrics(CUR)
    scr._adopt_job()
    items = V.sample_items(scr.controller.ws, "demo-tiny")
    scr._scraped(scr.url(), 0.0, prev, dict(HEALTH), V.stats_rows(None, prev, 0.0), items, "demo-tiny")
    scr._scraped(scr.url(), 5.0, cur, dict(HEALTH), V.stats_rows(prev, cur, 5.0), items, "demo-tiny")
    scr.rps.clear()
    scr.rps.extend((float(t), 8.0 + t / 10) for t in range(0, 61, 1))
    scr._show()
