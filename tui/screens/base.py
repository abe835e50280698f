"""What every screen shares: the navigation bar, the guide line, the footer, and the controller's
messages (Textual calls these handlers for every screen class in the MRO, so subclasses add their
own `on_mount` / `on_jobs_changed` without calling super)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from textual.app import ComposeResult
from textual.containers import Container
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from tui.messages import GuideChanged, JobsChanged
from tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from tui.controller import Controller


class GuideLine(Static):
    """One line that tells a new user the next step (hidden when there is none)."""

    DEFAULT_CSS = """
    GuideLine { height: auto; max-height: 2; background: $accent 30%; padding: 0 1; display: none; }
    GuideLine.-visible { display: block; }
    """

    def show_text(self, text: str | None) -> None:
        self.update(text or "")
        self.set_class(bool(text), "-visible")


class BaseScreen(Screen):
    MODE = ""
    TITLE_TEXT = ""          # the screen's name in the palette and the navigation bar

    @property
    def controller(self) -> "Controller":
        return self.app.controller  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield GuideLine(id="guide")
        with Container(id="body", classes=f"body-{self.MODE}"):
            yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> Iterable[Widget]:
        return []

    def on_mount(self) -> None:
        self.controller.listen(self)
        self.refresh_guide()

    def on_unmount(self) -> None:
        self.controller.unlisten(self)

    def on_screen_resume(self) -> None:
        self.refresh_guide()

    def on_guide_changed(self, _: GuideChanged) -> None:
        self.refresh_guide()

    def on_jobs_changed(self, _: JobsChanged) -> None:
        self.query_one(NavBar).refresh()

    def refresh_guide(self) -> None:
        self.query_one("#guide", GuideLine).show_text(self.guide_text())

    def guide_text(self) -> str | None:
        """The guide line: the controller's first-run guide on the screens that show it."""
        return None

    def action_noop(self) -> None:
        """Palette entries that only switch to this screen."""

    def error(self, message: str) -> None:
        self.notify(message, severity="error", timeout=8)
