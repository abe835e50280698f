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

    def _screens(self, short: bool = False) -> list[tuple[str, str, str]]:
        """(mode, key, label) from the app's screen bindings, in their order; `short`: the bindings'
        descriptions (Data, Rec) instead of the screens' titles."""
        out = []
        for b in self.app.BINDINGS:
            if b.show and b.action.startswith("show("):
                mode = b.action[len("show('"):-2]
                out.append((mode, b.key_display or b.key, b.description if short else self.app.MODES[mode].TITLE_TEXT))
        return out

    def render(self) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        screens = self._screens()
        # every screen's key must stay visible: short labels when the titles do not fit
        if sum(len(f" {k} {label} ") for _, k, label in screens) + 12 > self.size.width:
            screens = self._screens(short=True)
        for mode, key, label in screens:
            start = len(t)
            if mode == self.mode:
                t.append(f" {key} {label} ", style="bold reverse")
            else:
                t.append(f" {key}", style="bold")
                t.append(f" {label} ", style="")
            self._spans.append((start, len(t), mode))
        jobs = self.app.controller.running_jobs()  # type: ignore[attr-defined]
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
