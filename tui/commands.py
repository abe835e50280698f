"""Command palette (ctrl+p): every action of every screen, derived from the bindings themselves
(the description is the title, the tooltip the help), so a new binding is in the palette at once."""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


def _key(b: Binding) -> str:
    return b.key_display or b.key.split(",")[0]


def palette_entries(app) -> Iterator[tuple[str, Callable, str]]:
    """(title, callback, help) for the app's screen keys and every binding of every screen."""
    for b in app.BINDINGS:
        if b.show and b.action.startswith("show("):
            mode = b.action[len("show('"):-2]
            title = app.MODES[mode].TITLE_TEXT
            yield f"{title}: show", partial(app.action_show, mode), f"{_key(b)}: {b.tooltip}"
    for mode, screen in app.MODES.items():
        for b in screen.BINDINGS:
            if isinstance(b, Binding) and b.description:
                yield (f"{screen.TITLE_TEXT}: {b.description}", partial(app.run_on, mode, b.action),
                       f"{_key(b)}: {b.tooltip}" if b.tooltip else _key(b))
    yield "Quit", app.action_quit, "ctrl+q: asks first when jobs are running"


class SessrecCommands(Provider):
    """All app actions in the palette; picking one switches screen and runs the action there."""

    async def discover(self) -> Hits:
        for title, cb, help_text in palette_entries(self.app):
            yield DiscoveryHit(title, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, cb, help_text in palette_entries(self.app):
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)
