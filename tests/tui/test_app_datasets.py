"""Datasets screen: the first start, the table and details, generate / import / build / rebuild /
delete through the keyboard, and bad inputs."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Select, Static

from tests.tui.conftest import make_app
from tests.tui.helpers import notifications, settle, type_text, wait_for
from tui.dialogs.base import ConfirmScreen
from tui.dialogs.datasets import DemoScreen, ImportScreen, RebuildScreen


async def test_first_start_offers_the_demo_with_one_key(empty_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    app = make_app(empty_ws)
    guides: list[str | None] = []          # every step of the guide, however fast the fake job ends
    set_guide = app.controller.set_guide
    monkeypatch.setattr(app.controller, "set_guide", lambda text: (guides.append(text), set_guide(text)))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.current_mode == "datasets"
        assert app.screen.query_one("#welcome").display
        assert app.focused is not None and app.focused.id == "welcome-go"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.kind == "demo" and job.argv[-3:] == ["demo", "--size", "small"]
        assert "--events" in job.argv and str(empty_ws.resolve()) in job.argv
        assert guides and "Step 1" in guides[0]
        await wait_for(pilot, lambda: not job.running)
        assert job.status == "done"
        await wait_for(pilot, lambda: app.current_mode == "train")       # step 2 of the guide
        await settle(pilot)
        assert "Step 2" in (app.controller.guide or "")


async def test_table_details_and_build(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    from tests.tui.test_app_train import _unbuilt_dataset
    _unbuilt_dataset(tiny_ws)
    app = make_app(tiny_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#ds-table", DataTable)
        assert table.row_count == 2 and screen.selected == "demo-tiny"
        assert "built" in str(table.get_row_at(0)[1]) and "partial" in str(table.get_row_at(1)[1])
        stages = screen.query_one("#stage-table", DataTable)
        names = [stages.get_row_at(i)[0] for i in range(stages.row_count)]
        assert names == ["ingest", "sessionize", "split", "items", "graph", "encodings", "oracle"]
        states = [str(stages.get_row_at(i)[1]) for i in range(stages.row_count)]
        assert states == ["done"] * 7
        summary = str(screen.query_one("#ds-summary", Static).render())
        assert "sessions" in summary and "431" in summary
        await wait_for(pilot, lambda: screen._dist_for == "demo-tiny")
        assert screen.query_one("#len-chart").data.bars is not None
        await pilot.press("ctrl+b")                  # everything is up to date: nothing to run
        assert any("up to date" in n for n in notifications(app)) and not app.controller.jobs.jobs
        await pilot.press("down")                    # the dataset that is not built
        await wait_for(pilot, lambda: screen.selected == "raw")
        states = [str(stages.get_row_at(i)[1]) for i in range(stages.row_count)]
        assert states == ["missing"] * 6              # not a demo: no oracle stage
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.argv[-3:] == ["data", "build", "raw"] and job.dataset == "raw"
        # the dataset is busy while its job runs: a second build is refused with a message
        if job.running:
            await pilot.press("ctrl+b")
            assert any("busy" in n for n in notifications(app))
        await wait_for(pilot, lambda: not job.running)


async def test_generate_demo_dialog(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, DemoScreen)
        app.screen.query_one("#size", Select).value = "tiny"
        app.screen.query_one("#name", Input).focus()
        await type_text(pilot, "bad name")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, DemoScreen)
        assert "use letters" in str(app.screen.query_one("#error", Static).render())
        app.screen.query_one("#name", Input).value = "mydemo"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.argv[-5:] == ["demo", "--size", "tiny", "--name", "mydemo"]
        await wait_for(pilot, lambda: not job.running)
        # no run yet in this workspace: the guide takes the user on to the Train screen
        await wait_for(pilot, lambda: app.current_mode == "train")
        await settle(pilot)


async def test_import_dialog_checks_inputs(tiny_ws: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    log = tmp_path / "clicks.dat"
    log.write_text("1,2015-01-01T00:00:00.000Z,214536502,0\n")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        dlg = app.screen
        assert isinstance(dlg, ImportScreen)
        err = dlg.query_one("#error", Static)
        dlg.query_one("#path", Input).value = str(tmp_path / "missing")
        await type_text(pilot, ".csv")
        await pilot.press("enter")
        assert "does not exist" in str(err.render())
        dlg.query_one("#path", Input).value = str(tmp_path)
        await pilot.press("ctrl+s")
        assert "is not a file" in str(err.render())
        dlg.query_one("#path", Input).value = str(log)
        dlg.query_one("#format", Select).value = "rsc15"
        await pilot.press("ctrl+s")
        assert "give the dataset a name" in str(err.render())
        dlg.query_one("#name", Input).value = "demo-tiny"
        await pilot.press("ctrl+s")
        assert "already exists" in str(err.render())
        dlg.query_one("#test", Input).value = str(tmp_path / "nope.dat")
        dlg.query_one("#name", Input).value = "clicks"
        await pilot.press("ctrl+s")
        assert "test file" in str(err.render())
        dlg.query_one("#test", Input).value = ""
        assert app.controller.jobs.jobs == {}
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.argv[-7:] == ["data", "import", str(log.resolve()), "--format", "rsc15", "--name", "clicks"]
        await wait_for(pilot, lambda: not job.running)


async def test_rebuild_and_delete_with_confirmation(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, RebuildScreen)
        app.screen.query_one("#stage", Select).value = "graph"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.controller.jobs.jobs)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.argv[-5:] == ["data", "build", "demo-tiny", "--force", "graph"]
        await wait_for(pilot, lambda: not job.running)
        # delete: escape keeps it, ctrl+y deletes
        await pilot.press("ctrl+x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        assert len(app.controller.jobs.jobs) == 1
        await pilot.press("delete")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: len(app.controller.jobs.jobs) == 2)
        job = app.controller.jobs.ordered()[0]
        assert job.argv[-4:] == ["data", "delete", "demo-tiny", "--yes"]
        await wait_for(pilot, lambda: not job.running)


async def test_failed_job_shows_its_error(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "fail")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+r", "ctrl+s")
        await wait_for(pilot, lambda: app.controller.jobs.jobs and not app.controller.jobs.ordered()[0].running)
        await pilot.pause(0.3)
        assert any("no valid rows" in n for n in notifications(app))
        await pilot.press("f3")
        await settle(pilot)
        text = str(app.screen.query_one("#job-stages", Static).render())
        assert "error: " in text and "no valid rows" in text


async def test_actions_without_datasets_explain_themselves(empty_ws: Path) -> None:
    app = make_app(empty_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key in ("ctrl+b", "ctrl+r", "ctrl+x"):
            await pilot.press(key)
        msgs = notifications(app)
        assert len([m for m in msgs if "no dataset to" in m]) == 3
        assert app.controller.jobs.jobs == {}
