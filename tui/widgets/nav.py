"""The top line: the screens with their F-keys (the current one highlighted) and running jobs."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.widget import Widget


class NavBar(Widget):
    DEFAULT_CSS = """
    NavBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self._spans: list[tuple[int, int, str]] = []

    def on_mount(self) -> None:
        self.app.jobs_signal.subscribe(self, lambda _: self.refresh())  # type: ignore[attr-defined]

    def render(self) -> Text:
        from tui.app import SCREENS_ORDER
        t = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        narrow = self.size.width < 100
        for mode, key, label in SCREENS_ORDER:
            if narrow and mode == "recommend":
                label = "Recommend"
            start = len(t)
            if mode == self.mode:
                t.append(f" {key} {label} ", style="bold reverse")
            else:
                t.append(f" {key}", style="bold")
                t.append(f" {label} ", style="")
            self._spans.append((start, len(t), mode))
        jobs = self.app.jobs.running()  # type: ignore[attr-defined]
        right = Text()
        if jobs:
            right.append(f" {len(jobs)} running ", style="bold cyan")
        if self.size.width >= 100:
            right.append(f" {self.app.sub_title} ", style="dim")
        pad = self.size.width - len(t) - len(right)
        if pad > 0:
            t.append(" " * pad)
            t.append_text(right)
        return t

    def on_click(self, event: events.Click) -> None:
        for start, end, mode in self._spans:
            if start <= event.x < end:
                self.app.call_later(self.app.action_show, mode)  # type: ignore[attr-defined]
                break
