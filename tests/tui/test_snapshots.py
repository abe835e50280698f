"""Screenshots (SVG) of the main screens at 80x24 and 120x40 with fixed data.

The workspace is the tiny demo plus fake runs and job records with fixed times (conftest); the
device is fixed (no GPU); timings are hidden. Update after an intended change with
`pytest tests/tui/test_snapshots.py --snapshot-update`, then look at them as PNG:
`python scripts/snapshots_to_png.py` (writes build/snapshots_png/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui.conftest import make_app
from tests.tui.helpers import screen_drawn, settle, wait_for

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def snap(snap_compare):
    """snap_compare, with the cursors made steady after each test's own preparation."""
    def compare(app, terminal_size=(80, 24), run_before=None):
        async def before(pilot) -> None:
            if run_before is not None:
                await run_before(pilot)
            await _steady(pilot)
        return snap_compare(app, terminal_size=terminal_size, run_before=before)
    return compare


@pytest.fixture
def snap_ws(full_ws: Path, monkeypatch) -> Path:
    monkeypatch.chdir(full_ws.parent)          # the workspace shows as "ws" whatever the tmp folder
    return full_ws


def _app(ws: Path):
    return make_app(ws, show_timings=False)


async def _steady(pilot) -> None:
    """No blinking text cursor (it would make screenshots differ by when they are taken)."""
    from textual.widgets import Input
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await pilot.pause()


async def _show(pilot, mode: str) -> None:
    app = pilot.app
    await settle(pilot)
    await app.switch_mode(mode)
    await screen_drawn(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_datasets(snap, snap_ws: Path, size) -> None:
    async def run_before(pilot) -> None:
        await _show(pilot, "datasets")
        await wait_for(pilot, lambda: pilot.app.screen._dist_for == "demo-tiny")
        await screen_drawn(pilot)
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_jobs(snap, snap_ws: Path, size) -> None:
    async def run_before(pilot) -> None:
        await _show(pilot, "jobs")
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_train_with_a_finished_run(snap, snap_ws: Path, size) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        await _show(pilot, "train")
        await wait_for(pilot, lambda: app.controller.device and app.screen.params_for)
        app.controller.open_run("run-a")
        await pilot.pause(0.2)
        await screen_drawn(pilot)
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_compare(snap, snap_ws: Path, size) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        await _show(pilot, "runs")
        await wait_for(pilot, lambda: len(app.screen.rows) == 3)
        await pilot.press("down", "space", "down", "space")
        await pilot.pause(0.2)
        await screen_drawn(pilot)
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_recommend(snap, snap_ws: Path, size) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        app.controller.prefer_source("baseline:sknn@demo-tiny")
        await _show(pilot, "recommend")
        screen = app.screen
        await wait_for(pilot, lambda: screen.results["a"] is not None, timeout=60)
        ids = [str(i) for i, _ in screen.popular[2:5]] + ["99999999"]
        screen.query_one("#ids").value = " ".join(ids)
        await wait_for(pilot, lambda: screen.results["a"].unknown == [99999999])
        from textual.widgets import Select
        screen.query_one("#src-b", Select).value = "baseline:itemknn@demo-tiny"
        await wait_for(pilot, lambda: screen.results["b"] is not None, timeout=60)
        screen.query_one("#ids").focus()
        await settle(pilot)
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap, snap_ws: Path, size) -> None:
    async def run_before(pilot) -> None:
        await _show(pilot, "help")
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


def test_welcome_on_an_empty_workspace(snap, empty_ws: Path, monkeypatch) -> None:
    monkeypatch.chdir(empty_ws.parent)

    async def run_before(pilot) -> None:
        await settle(pilot)
    assert snap(_app(empty_ws), terminal_size=(80, 24), run_before=run_before)


def test_import_dialog(snap, snap_ws: Path) -> None:
    async def run_before(pilot) -> None:
        await _show(pilot, "datasets")
        await pilot.press("ctrl+o")
        await pilot.press("enter")           # empty path: the dialog says what is missing
        await pilot.pause(0.2)
    assert snap(_app(snap_ws), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_serve(snap, snap_ws: Path, size, monkeypatch) -> None:
    from tests.tui.test_app_serve import add_running_server, show_fixed_numbers
    monkeypatch.setattr("tui.screens.serve.POLL_S", 3600.0)      # the numbers are the test's, not scraped

    async def run_before(pilot) -> None:
        app = pilot.app
        await _show(pilot, "serve")
        await wait_for(pilot, lambda: app.screen.targets)
        add_running_server(app)
        show_fixed_numbers(app.screen)
        await screen_drawn(pilot)
    assert snap(_app(snap_ws), terminal_size=size, run_before=run_before)


def test_serve_ab(snap, snap_ws: Path, monkeypatch) -> None:
    """An A/B server: the arms panel under the live numbers (the report's numbers are the test's)."""
    from tests.tui.test_app_serve import HEALTH, PREV, add_running_server
    from tests.tui.test_app_serve_ab import EXPERIMENT, REPORT
    from tui import serve_view as V
    monkeypatch.setattr("tui.screens.serve.POLL_S", 3600.0)

    async def run_before(pilot) -> None:
        from engine.serve.scrape import parse_metrics
        app = pilot.app
        await _show(pilot, "serve")
        await wait_for(pilot, lambda: app.screen.targets)
        add_running_server(app)
        scr = app.screen
        scr._adopt_job()
        prev = parse_metrics(PREV)
        scr._scraped(scr.url(), 0.0, prev, {**HEALTH, "experiment": EXPERIMENT}, V.stats_rows(None, prev, 0.0), [],
                     "demo-tiny", REPORT)
        await screen_drawn(pilot)
    assert snap(_app(snap_ws), terminal_size=(120, 40), run_before=run_before)
