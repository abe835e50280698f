"""Runs screen (sort, select and compare, details), Jobs screen (history, log tail, cancel), the
command palette and the help screen."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import DataTable, Log, Static

from tests.tui.conftest import make_app
from tests.tui.helpers import notifications, settle, type_text, wait_for
from tui.dialogs.datasets import ImportScreen
from tui.dialogs.runs import RunDetailsScreen
from tui.widgets.charts import Chart


async def test_runs_table_sort_compare_details(full_ws: Path) -> None:
    app = make_app(full_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f5")
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        ids = [table.get_row_at(i)[1] for i in range(3)]
        assert ids == ["run-c", "run-b", "run-a"]               # newest first
        statuses = {table.get_row_at(i)[1]: str(table.get_row_at(i)[4]) for i in range(3)}
        assert statuses == {"run-a": "completed", "run-b": "completed", "run-c": "failed"}
        # ctrl+s sorts (by validation Recall@10 first, best first; the failed run has none: last)
        await pilot.press("ctrl+s")
        ids = [table.get_row_at(i)[1] for i in range(3)]
        assert ids[-1] == "run-c" and screen.sort_key == "val_recall"
        vals = [table.get_row_at(i)[6] for i in range(2)]
        assert vals == sorted(vals, reverse=True)
        # space selects runs to compare; their curves share one chart
        table.move_cursor(row=0)
        await pilot.press("space")
        await pilot.press("down", "space")
        assert len(screen.marked) == 2
        chart = screen.query_one("#compare-chart", Chart)
        assert len(chart.data.series) == 2 and {s.label for s in chart.data.series} == set(screen.marked)
        await pilot.press("ctrl+g")                              # NDCG@10
        assert "NDCG" in chart.data.title
        await pilot.press("ctrl+g")                              # loss per step
        assert "loss" in chart.data.title and len(chart.data.series[0].xs) > 0
        await pilot.press("space")                               # unselect
        assert len(screen.marked) == 1
        # enter: config and events of the run
        await pilot.press("enter")
        assert isinstance(app.screen, RunDetailsScreen)
        text = str(app.screen.query_one("#details", Static).render())
        assert "config.json" in text and "run_finished" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, RunDetailsScreen)


async def test_runs_recommend_refuses_a_run_without_checkpoint(full_ws: Path) -> None:
    app = make_app(full_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5")
        await settle(pilot)
        table = app.screen.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        table.move_cursor(row=0)                                 # run-c: failed before any checkpoint
        await pilot.pause()
        await pilot.press("ctrl+r")
        assert any("no checkpoint" in n for n in notifications(app))
        assert app.current_mode == "runs"
        # ctrl+o shows a finished run's curves on the Train screen (from its events file)
        table.move_cursor(row=2)
        await pilot.pause()
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: app.current_mode == "train")
        assert app.controller.current_run == "run-a" and app.controller.run_state("run-a").epoch_x == [1, 2, 3, 4]


async def test_jobs_history_log_tail(full_ws: Path) -> None:
    app = make_app(full_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#jobs-table", DataTable)
        assert table.row_count == 2
        assert str(table.get_row_at(0)[1]) == "train sknn on demo-tiny"      # most recent first
        head = str(screen.query_one("#job-stages", Static).render())
        assert "CUDA out of memory" in head and "suggestion: retry" in head
        assert any("line two" in ln for ln in screen.query_one("#job-log", Log).lines)
        await pilot.press("down")
        assert "demo tiny" in str(screen.query_one("#job-stages", Static).render())
        await pilot.press("ctrl+t")
        assert any("not running" in n for n in notifications(app))
        await pilot.press("ctrl+l")
        assert table.row_count == 0 and app.controller.jobs.jobs == {}
        assert not list((full_ws / "logs").glob("*.json")) and list((full_ws / "logs").glob("*.log"))


async def test_jobs_screen_cancels_a_running_pipeline(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+r", "ctrl+s")          # rebuild everything
        await pilot.press("f3")
        job = next(iter(app.controller.jobs.jobs.values()))
        await wait_for(pilot, lambda: job.stages.get("ingest") is not None)
        await pilot.pause(0.3)
        screen = app.screen
        text = str(screen.query_one("#job-stages", Static).render())
        assert "ingest" in text and "steps" in text
        cells = screen.query_one("#jobs-table", DataTable).get_row_at(0)
        assert "%" in str(cells[2])
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: not job.running)
        assert job.status == "cancelled"


async def test_command_palette_runs_screen_actions(tiny_ws: Path) -> None:
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await type_text(pilot, "import")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImportScreen))
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await type_text(pilot, "runs: sh")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "runs")


def _emoji(text: str) -> list[str]:
    """Characters of `text` in the emoji blocks (and the emoji presentation selector)."""
    return sorted({c for c in text if 0x1F000 <= ord(c) <= 0x1FAFF or 0x2600 <= ord(c) <= 0x27BF
                   or ord(c) == 0xFE0F})


async def test_the_command_palette_shows_no_emoji(tiny_ws: Path) -> None:
    """Issue 21, finding 15: Textual's palette draws a magnifier emoji (U+1F50E), which some SSH
    terminals show as a box; docs/getting-started.md promises no emoji. Checked on the rendered screen."""
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "CommandPalette"
        assert _emoji(app.export_screenshot()) == []
        await type_text(pilot, "theme")
        await pilot.press("enter")           # Textual's own theme palette: the same icon
        await pilot.pause(0.3)
        assert "themes" in app.screen.query_one("CommandInput").placeholder
        assert _emoji(app.export_screenshot()) == []


async def test_help_screen_and_question_mark(tiny_ws: Path) -> None:
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert app.current_mode == "help"
        await pilot.press("f2")
        await pilot.press("f1")
        assert app.current_mode == "help"
        md = app.screen.query_one("#help-md")
        assert "TEXTUAL_COLOR_SYSTEM" in md.source and "runs/RUN-ID" in md.source


async def test_jobs_screen_switches_the_policy_and_shows_queued_jobs(tiny_ws: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    app = make_app(tiny_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        policy = screen.query_one("#jobs-policy", Static)
        assert "policy share" in str(policy.render())
        await pilot.press("ctrl+g")
        assert app.controller.jobs.settings.policy == "queue"
        assert json.loads(app.ws.settings.read_text())["job_policy"] == "queue"
        assert "policy queue" in str(policy.render())
        first = app.controller.build("demo-tiny")
        second = app.controller.generate_demo("tiny", "other")
        assert first.running and second.status == "queued"
        table = screen.query_one("#jobs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2 and str(table.get_row_at(0)[0]) == "queued")
        assert "waits for build demo-tiny" in str(table.get_row_at(0)[2])
        table.move_cursor(row=0)
        await pilot.pause()
        assert "queued: waits for build demo-tiny" in str(screen.query_one("#job-stages", Static).render())
        await pilot.press("ctrl+t")                              # a queued job is just removed
        await wait_for(pilot, lambda: table.row_count == 1)
        assert second.id not in app.controller.jobs.jobs and first.running
        await pilot.press("ctrl+g")
        assert app.controller.jobs.settings.policy == "share" and "policy share" in str(policy.render())
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: not first.running)


async def test_an_unreadable_dataset_or_run_never_hides_the_others(full_ws: Path) -> None:
    """A broken manifest, a broken run config and non-UTF-8 bytes in an events file: every screen
    lists what it can read and marks the rest with the reason."""
    broken = full_ws / "datasets" / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    (full_ws / "runs" / "run-b" / "config.json").write_text("{not json")
    with open(full_ws / "runs" / "run-a" / "events.jsonl", "ab") as f:
        f.write(b"\xff\xfe garbage\n[1, 2]\n")
    app = make_app(full_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#ds-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        rows = {table.get_row_at(i)[0]: str(table.get_row_at(i)[1]) for i in range(2)}
        assert "unreadable" in rows["broken"] and "built" in rows["demo-tiny"]
        table.move_cursor(row=0)
        await wait_for(pilot, lambda: screen.selected == "broken")
        assert "manifest.json" in str(screen.query_one("#ds-title", Static).render())
        await pilot.press("f5")
        await settle(pilot)
        runs = app.screen.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: runs.row_count == 3)
        status = {runs.get_row_at(i)[1]: str(runs.get_row_at(i)[4]) for i in range(3)}
        assert status == {"run-a": "completed", "run-b": "unreadable", "run-c": "failed"}
        assert app.screen.states["run-a"].skipped_lines == 2
        # the CLI reads the same runs the same way
        from engine.runs import list_runs
        assert {s.run_id: str(s.status) for s in list_runs(app.ws)} == status
