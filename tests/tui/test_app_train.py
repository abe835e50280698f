"""Train screen: the form, a run's events driving the charts (fake child), crash / OOM / kill,
stop, quit while a run trains (stop or leave detached), re-open a detached run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static

from engine.core.process import pid_alive
from tests.tui.conftest import make_app
from tests.tui.helpers import notifications, settle, wait_for
from tui.dialogs.base import QuitScreen
from tui.dialogs.runs import OpenRunScreen
from tui.widgets.charts import Chart


async def _train_screen(pilot, model: str = "sknn"):
    app = pilot.app
    await pilot.press("f4")
    await settle(pilot)
    screen = app.screen
    await wait_for(pilot, lambda: screen.datasets and app.controller.device is not None)
    screen.query_one("#f-model", Select).value = model
    await settle(pilot)
    await wait_for(pilot, lambda: screen.params_for and screen.params_for[0] == model)
    return screen


def _unbuilt_dataset(ws: Path) -> None:
    """A second dataset registered but never built."""
    from engine.core.config import DataConfig
    from engine.core.workspace import Workspace
    from engine.data.manifest import Dataset
    w = Workspace.open(ws)
    Dataset.create(w, "raw", w.dataset("demo-tiny").demo_events, DataConfig())


async def test_form_defaults_and_bad_inputs(tiny_ws: Path) -> None:
    _unbuilt_dataset(tiny_ws)
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _train_screen(pilot, "graph_transformer")
        assert screen.query_one("#f-dataset", Select).value == "demo-tiny"
        # CPU: the CPU preset of the hyperparameters is shown (the engine config's), epochs are
        # CPU-friendly, every field comes from the engine's configs
        assert screen.query_one("#p-hidden", Input).value == "128"
        assert screen.query_one("#t-epochs", Input).value == "3"
        assert [str(s.value) for s in screen.query("#p-readout")] == ["attention"]
        assert "no GPU" in str(screen.query_one("#device-info", Static).render())
        # a dataset that is not built is refused with a message, before any job starts
        screen.query_one("#f-dataset", Select).value = "raw"
        await pilot.press("ctrl+s")
        assert any("dataset raw is not built" in n for n in notifications(app))
        screen.query_one("#f-dataset", Select).value = "demo-tiny"
        screen.query_one("#f-model", Select).value = "sknn"
        await wait_for(pilot, lambda: screen.params_for[0] == "sknn")
        assert screen.query_one("#t-epochs", Input).disabled
        screen.query_one("#p-k", Input).value = "many"
        await pilot.press("ctrl+s")
        assert any("k: expected a whole number" in n for n in notifications(app))
        screen.query_one("#t-device", Select).value = "cuda"
        screen.query_one("#p-k", Input).value = "50"
        await pilot.press("ctrl+s")
        assert any("no GPU was detected" in n for n in notifications(app))
        assert app.controller.jobs.jobs == {}
        screen.query_one("#f-model", Select).value = "graphsage"
        screen.query_one("#t-device", Select).value = "auto"
        await wait_for(pilot, lambda: screen.params_for[0] == "graphsage")
        screen.query_one("#t-epochs", Input).value = "0"
        await pilot.press("ctrl+s")
        assert any("epochs: must be >= 1 and <= 100000 (got 0)" in n for n in notifications(app))
        screen.query_one("#t-epochs", Input).value = "2"
        screen.query_one("#p-dropout", Input).value = "1.5"
        await pilot.press("ctrl+s")
        assert any("dropout: must be >= 0 and < 1 (got 1.5)" in n for n in notifications(app))
        assert app.controller.jobs.jobs == {}
        # ctrl+r restores the defaults
        screen.query_one("#p-hidden", Input).value = "7"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.query_one("#p-hidden", Input).value == "128")


async def test_run_events_drive_the_charts(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.01")
    app = make_app(tiny_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _train_screen(pilot, "sknn")
        screen.query_one("#p-k", Input).value = "50"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.argv[job.argv.index("--k") + 1] == "50" and job.run_id in job.argv
        rid = job.run_id
        await wait_for(pilot, lambda: app.controller.run_state(rid).finished)
        st = app.controller.run_state(rid)
        assert st.status == "completed" and len(st.losses) == 16 and st.epoch_x == [1, 2]
        await pilot.pause(0.5)        # the charts redraw on their timer
        loss = screen.query_one("#loss-chart", Chart)
        val = screen.query_one("#val-chart", Chart)
        assert loss.data.series[0].ys == st.losses and loss.draws >= 1
        assert [s.label for s in val.data.series] == ["Recall@10", "NDCG@10"]
        assert val.data.vlines == [float(st.best_epoch)]
        head = str(screen.query_one("#run-head", Static).render())
        assert rid in head and "completed" in head and "test R@10" in head and "last " in head
        assert any("finished" in n for n in notifications(app))
        assert app.controller.take_preferred_source() == f"run:{rid}"


async def test_charts_redraw_at_most_a_few_times_a_second(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.01")     # 100 steps/s: 50 times the engine's rate
    app = make_app(tiny_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f5")                         # mount the Runs screen once
        await settle(pilot)
        screen = await _train_screen(pilot)
        loss = screen.query_one("#loss-chart", Chart)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.current_run and len(app.controller.run_state(app.controller.current_run).losses) > 5)
        d0, n0, t0 = loss.draws, len(app.controller.run_state(app.controller.current_run).losses), time.monotonic()
        await pilot.pause(1.5)
        draws = loss.draws - d0
        events = len(app.controller.run_state(app.controller.current_run).losses) - n0
        elapsed = time.monotonic() - t0
        assert events > draws * 3, (events, draws)
        assert draws <= 5 * elapsed + 2
        # keys still answer while the child streams events: time from the key to its action
        handled: list[float] = []
        show = app.action_show

        async def timed_show(mode: str) -> None:
            handled.append(time.monotonic())
            await show(mode)
        app.action_show = timed_show  # type: ignore[method-assign]
        lags = []
        for key, mode in (("f5", "runs"), ("f4", "train"), ("f5", "runs"), ("f4", "train")):
            t1 = time.monotonic()
            await pilot.press(key)
            assert app.current_mode == mode
            lags.append(handled[-1] - t1)
        assert max(lags) < 0.1, lags
        await pilot.press("ctrl+t")
        job = app.controller.job_for_run(app.controller.current_run)
        await wait_for(pilot, lambda: not job.running)


@pytest.mark.parametrize("scenario,kind,needle", [
    ("crash", "error", "boom in step 3"),
    ("oom", "cuda_oom", "CUDA out of memory"),
    ("cuda_error", "cuda_error", "illegal memory access"),
    ("killed", "error", "SIGKILL"),
])
async def test_child_failures_are_shown_and_the_app_lives_on(tiny_ws: Path, monkeypatch, scenario, kind,
                                                             needle) -> None:
    monkeypatch.setenv("FAKE_CHILD", scenario)
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _train_screen(pilot)
        await pilot.press("ctrl+s")
        # a child that dies without its final event reads as interrupted (its lock is free) until
        # the app, seeing it exit, records what it saw: then it is failed, with the reason
        await wait_for(pilot, lambda: app.controller.current_run
                       and app.controller.run_state(app.controller.current_run).status == "failed")
        st = app.controller.run_state(app.controller.current_run)
        assert needle in (st.error or "")
        assert (st.error_kind or "error") == kind
        # the CLI (a fresh read of the run folder) tells the same story: what the app saw of a
        # child that died without its final event went into the run's events
        from engine.runs import read_run
        cli_view = read_run(app.ws, st.run_id)
        assert cli_view.status == "failed" and needle in (cli_view.error or "")
        await pilot.pause(0.4)
        err = screen.query_one("#run-error", Static)
        assert err.display and needle in str(err.render())
        if scenario == "oom":
            assert "batch-size 256" in str(err.render())
        if scenario == "crash":       # the stderr tail is on screen
            await wait_for(pilot, lambda: "RuntimeError" in "\n".join(screen.query_one("#run-log").lines))
        assert any("failed" in n for n in notifications(app))
        await pilot.press("f2")
        assert app.current_mode == "datasets"


async def test_stop_ends_the_run_as_stopped(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await _train_screen(pilot)
        await pilot.press("ctrl+t")
        assert any("no run to stop" in n for n in notifications(app))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.current_run and app.controller.run_state(app.controller.current_run).losses)
        await pilot.press("ctrl+t")
        job = app.controller.job_for_run(app.controller.current_run)
        await wait_for(pilot, lambda: not job.running)
        assert job.status == "stopped" and app.controller.run_state(app.controller.current_run).status == "stopped"
        assert (tiny_ws / "runs" / app.controller.current_run / "last.pt").exists()


async def test_quit_while_training_can_stop_the_run(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await _train_screen(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.current_run and app.controller.run_state(app.controller.current_run).losses)
        job = app.controller.job_for_run(app.controller.current_run)
        pid = job.pid
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")           # stay
        assert not isinstance(app.screen, QuitScreen) and app.is_running
        await pilot.press("ctrl+q")
        await pilot.press("ctrl+t")           # stop and quit
        await wait_for(pilot, lambda: not job.running, timeout=10)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


async def test_quit_leaving_the_run_detached_then_reopen_it(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.05")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await _train_screen(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.current_run and app.controller.run_state(app.controller.current_run).losses)
        rid = app.controller.current_run
        pid = app.controller.job_for_run(rid).pid
        await pilot.press("ctrl+q")
        await pilot.press("ctrl+d")           # leave running
        await pilot.pause(0.2)
    try:
        assert pid_alive(pid), "a detached run must survive the app"
        events = tiny_ws / "runs" / rid / "events.jsonl"
        n = events.read_text().count("\n")
        time.sleep(0.5)
        assert events.read_text().count("\n") > n, "the detached run keeps writing its events"
        # a new app: the job is listed as detached; the run re-opens from its events file and is followed
        app2 = make_app(tiny_ws)
        async with app2.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            assert app2.controller.job_for_run(rid).status == "detached"
            await pilot.press("f4")
            await settle(pilot)
            await pilot.press("ctrl+o")
            await wait_for(pilot, lambda: isinstance(app2.screen, OpenRunScreen))
            await pilot.press("enter")            # the running run is listed first
            await wait_for(pilot, lambda: app2.controller.current_run == rid)
            st = app2.controller.run_state(rid)
            n0 = len(st.losses)
            assert n0 > 0 and st.status == "running"
            await wait_for(pilot, lambda: len(st.losses) > n0)     # followed live
            await pilot.press("ctrl+t")                              # stop the detached run
            await wait_for(pilot, lambda: st.finished, timeout=10)
            assert st.status == "stopped"
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_workers_and_gpus_of_a_training(tiny_ws: Path, monkeypatch) -> None:
    """Workers and GPUs in the form: checked, passed as --nproc and as the job's GPUs; while it runs
    the Train screen shows those GPUs' utilisation and memory (a fake NVML)."""
    import engine.core.gpu_monitor as gm
    from tests.test_gpu_monitor import fake_pynvml
    from tests.tui.conftest import DEVICE
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gm, "_nvml", fake_pynvml())
    gpu_box = {**DEVICE, "cuda_available": True, "gpu_name": "NVIDIA H100", "gpu_memory_gb": 80.0, "gpu_count": 2}
    app = make_app(tiny_ws, device_loader=lambda: dict(gpu_box))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _train_screen(pilot, "graph_transformer")
        bad = [("0", "auto", "workers: expected a whole number >= 1, got '0'"),
               ("2", "0,5", "GPUs: this machine has 2 GPU(s), indices 0..1"),
               ("2", "1", "GPUs: give one per worker (2 worker(s), 1 GPU(s))"),
               ("3", "auto", "workers: batch size 512 is the global batch and must be divisible by the 3 workers "
                             "(each takes 512 / 3); try batch size 510"),
               ("2", "0,0", "GPUs: expected auto or distinct GPU indices like 0,1, got '0,0'")]
        for workers, gpus, message in bad:
            screen.query_one("#t-workers", Input).value = workers
            screen.query_one("#t-gpus", Input).value = gpus
            await pilot.press("ctrl+s")
            assert any(message in n for n in notifications(app)), message
        assert app.controller.jobs.jobs == {}
        screen.query_one("#t-workers", Input).value = "2"
        screen.query_one("#t-gpus", Input).value = "1,0"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.argv[-2:] == ["--nproc", "2"] and job.gpus == [1, 0] and "(2 workers)" in job.title
        assert app.controller.jobs.child_env(job)["CUDA_VISIBLE_DEVICES"] == "1,0"
        gpus = screen.query_one("#run-gpus", Static)
        await wait_for(pilot, lambda: "GPU 1: 87% busy, 3,072 / 81,920 MB" in str(gpus.render()), timeout=10)
        assert "GPU 0: 87% busy" in str(gpus.render())
        await pilot.press("ctrl+t")                          # stopped: the GPU line goes
        await wait_for(pilot, lambda: not job.running, timeout=30)
        await wait_for(pilot, lambda: not gpus.display, timeout=10)
