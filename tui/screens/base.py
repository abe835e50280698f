"""What every screen shares: the navigation bar, the guide line, the footer, safe workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from textual.app import ComposeResult
from textual.containers import Container
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from tui.app import SessrecApp


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

    @property
    def sapp(self) -> "SessrecApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield GuideLine(id="guide")
        with Container(id="body", classes=f"body-{self.MODE}"):
            yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> Iterable[Widget]:
        return []

    def on_screen_resume(self) -> None:
        self.refresh_guide()

    def refresh_guide(self) -> None:
        try:
            self.query_one("#guide", GuideLine).show_text(self.guide_text())
        except Exception:
            pass

    def guide_text(self) -> str | None:
        return None

    def action_noop(self) -> None:
        """Palette entries that only switch to this screen."""

    def error(self, message: str) -> None:
        self.notify(message, severity="error", timeout=8)
