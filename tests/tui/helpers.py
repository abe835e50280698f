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


async def charts_drawn(pilot, limit: float = 3.0) -> None:
    """Give the charts time to draw their latest data: they redraw on a timer, which a loaded
    machine delays past a fixed pause. Waits while a visible chart is still marked dirty, at least
    0.4 s and at most `limit` seconds (a chart scrolled out of view never draws), then settles."""
    from tui.widgets.charts import Chart
    await settle(pilot)
    start = time.monotonic()
    await pilot.pause(0.4)
    while (time.monotonic() - start < limit
           and any(c._dirty and c.is_on_screen for c in pilot.app.screen.query(Chart))):
        await pilot.pause(0.05)
    await settle(pilot)
