"""The whole path with the real engine, keyboard only, on the tiny demo:
generate -> build -> train (a tiny Graph Transformer, 1 epoch; and the sknn baseline) -> recommend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select

from tests.tui.conftest import make_app
from tests.tui.helpers import notifications, settle, wait_for
from tui.dialogs.datasets import DemoScreen

pytestmark = pytest.mark.slow


async def _train(pilot, model: str, **params: str):
    app = pilot.app
    screen = app.screen
    screen.query_one("#f-model", Select).value = model
    await wait_for(pilot, lambda: screen.params_for and screen.params_for[0] == model)
    for key, value in params.items():
        screen.query_one(f"#p-{key}", Input).value = value
    before = set(app.controller.jobs.jobs)
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: set(app.controller.jobs.jobs) - before)
    job = app.controller.jobs.jobs[(set(app.controller.jobs.jobs) - before).pop()]
    await wait_for(pilot, lambda: not job.running, timeout=240)
    assert job.status == "done", (job.error, list(job.log_lines)[-10:])
    return job


async def test_generate_build_train_recommend(empty_ws: Path) -> None:
    app = make_app(empty_ws, child=False, device_loader=None)   # the real engine
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.screen.query_one("#welcome").display
        # generate and build the tiny demo (Enter would build the small one; ctrl+n picks the size)
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, DemoScreen)
        app.screen.query_one("#size", Select).value = "tiny"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        demo = next(iter(app.controller.jobs.jobs.values()))
        await wait_for(pilot, lambda: not demo.running, timeout=120)
        assert demo.status == "done", (demo.error, list(demo.log_lines)[-10:])
        assert {"pipeline", "ingest", "graph", "encodings"} <= set(demo.stages)
        # the guide takes the new user to the Train screen, preselected
        await wait_for(pilot, lambda: app.current_mode == "train", timeout=30)
        screen = app.screen
        await wait_for(pilot, lambda: screen.datasets and screen.params_for, timeout=60)
        assert screen.query_one("#f-dataset", Select).value == "demo-tiny"
        assert screen.query_one("#f-model", Select).value == "graph_transformer"
        assert "Step 2" in (app.controller.guide or "")
        screen.query_one("#t-epochs", Input).value = "1"
        gt = await _train(pilot, "graph_transformer", hidden="32")
        st = app.controller.run_state(gt.run_id)
        assert st.status == "completed" and st.epoch_x == [1] and st.losses and st.test
        assert (empty_ws / "runs" / gt.run_id / "best.pt").exists()
        sk = await _train(pilot, "sknn")
        assert app.controller.run_state(sk.run_id).status == "completed"
        # recommend with the trained model, the baseline side by side
        app.controller.prefer_source(f"run:{gt.run_id}")
        await pilot.press("f6")
        await settle(pilot)
        rec = app.screen
        await wait_for(pilot, lambda: rec.results["a"] is not None, timeout=60)
        assert rec.query_one("#src-a", Select).value == f"run:{gt.run_id}"
        rec.query_one("#src-b", Select).value = f"run:{sk.run_id}"
        await wait_for(pilot, lambda: rec.results["b"] is not None, timeout=60)
        items = [i for i, _ in rec.popular[:3]]
        rec.query_one("#ids", Input).value = " ".join(map(str, items))
        await wait_for(pilot, lambda: rec.results["a"].known == items and rec.results["b"].known == items)
        assert rec.query_one("#rec-a", DataTable).row_count == 10
        assert rec.query_one("#rec-b", DataTable).row_count == 10
        # the Runs screen lists both, with test metrics
        await pilot.press("f5")
        await settle(pilot)
        await wait_for(pilot, lambda: len(app.screen.rows) == 2)
        assert all(r["test_last"] is not None for r in app.screen.rows)
        # serve the trained run from the Serve screen: the real `sessrec serve`, real HTTP requests,
        # the screen's live table from the server's real /metrics
        import socket

        import httpx

        from tui.screens.serve import ServeScreen
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        await pilot.press("f8")
        srv = app.screen
        assert isinstance(srv, ServeScreen)
        await wait_for(pilot, lambda: srv.targets)
        srv.query_one("#s-target").value = gt.run_id
        srv.query_one("#s-port").value = str(port)
        srv.action_start()
        job = srv.job
        await wait_for(pilot, lambda: job.serving is not None, timeout=120)
        assert job.serving["run_id"] == gt.run_id and job.serving["port"] == port
        with httpx.Client(base_url=job.serving["url"], timeout=30) as c:
            for _ in range(5):
                r = c.post("/recommend", json={"session_items": items, "k": 10})
                assert r.status_code == 200 and len(r.json()["items"]) == 10
        srv.poll()
        await wait_for(pilot, lambda: srv.snapshot is not None and srv.snapshot.requests.get("/recommend"),
                       timeout=30)
        assert sum(srv.snapshot.requests["/recommend"].values()) == 5
        # Reload from the app with no API key given: the app's admin-only key opens /admin/reload
        assert srv.api_key() is None
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ReloadScreen")
        await pilot.press("home", "enter")                   # the same run again
        await wait_for(pilot, lambda: any("reloading the same run" in n for n in notifications(app)), timeout=30)
        with httpx.Client(base_url=job.serving["url"], timeout=30) as c:
            assert c.post("/admin/reload").status_code == 401           # nobody else can
            deadline = time.monotonic() + 60
            while (state := c.get("/health").json()["reload"])["finished_at"] is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert state["error"] is None and state["finished_at"] is not None, state
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: job.status.finished, timeout=60)
        assert job.status == "done" and job.returncode == 0
