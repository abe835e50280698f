"""Small helpers for pilot tests."""

from __future__ import annotations

import time
from typing import Callable


async def wait_for(pilot, cond: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> None:
    """Let the app run until `cond()` is true (fails the test after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(cond, '__doc__', '') or cond}")
        await pilot.pause(step)


async def settle(pilot, rounds: int = 3) -> None:
    """Let workers finish and the screen catch up."""
    from textual.worker import WorkerCancelled, WorkerFailed
    for _ in range(rounds):
        try:
            await pilot.app.workers.wait_for_complete()
        except (WorkerCancelled, WorkerFailed):   # a superseded exclusive worker, or a failed one
            pass
        await pilot.pause(0.05)


async def type_text(pilot, text: str) -> None:
    await pilot.press(*[{" ": "space", ",": "comma", "/": "slash", ".": "full_stop", "-": "minus",
                         "_": "underscore", "~": "tilde"}.get(c, c) for c in text])


def notifications(app) -> list[str]:
    return [f"{n.title or ''}: {n.message}" for n in app._notifications]


def _pending(pilot) -> bool:
    """A visible chart not yet redrawn, or a table whose column widths wait for the next idle."""
    from textual.widgets import DataTable

    from tui.widgets.charts import Chart
    screen = pilot.app.screen
    return (any(c._dirty and c.is_on_screen for c in screen.query(Chart))
            or any(t._new_rows or t._require_update_dimensions or t._updated_cells
                   for t in screen.query(DataTable)))


async def screen_drawn(pilot, limit: float = 3.0) -> None:
    """Give the screen time to draw its latest data: charts redraw on a timer and tables size their
    columns when the app is idle, both of which a loaded machine delays past a fixed pause. Waits
    at least 0.4 s and while something is pending, at most `limit` seconds (a chart scrolled out of
    view never draws), then settles."""
    await settle(pilot)
    start = time.monotonic()
    await pilot.pause(0.4)
    while time.monotonic() - start < limit and _pending(pilot):
        await pilot.pause(0.05)
    await settle(pilot)
