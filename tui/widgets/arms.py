"""The Serve screen's A/B panel: one row per arm and the sequential test's verdict (tui/ab_view.py
says what is in them); hidden unless the server runs an experiment."""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static

from tui.ab_view import ARM_COLUMNS, arm_rows, verdict_lines


class ArmsPanel(Vertical):
    def compose(self) -> Iterable[Widget]:
        yield Static("", classes="arms-title")
        yield DataTable(cursor_type="none", zebra_stripes=False, show_cursor=False, classes="arms-table")
        yield Static("", classes="arms-verdict")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        for label, width in ARM_COLUMNS:
            t.add_column(label, key=label, width=width)
        self.display = False

    def show(self, experiment: dict | None, report: dict[str, Any] | None) -> None:
        """`experiment`: /health's; `report`: engine.ab.report's (None while nothing is logged)."""
        self.display = experiment is not None
        if experiment is None:
            return
        shares = {a["name"]: a["share"] for a in experiment["arms"]}
        self.query_one(".arms-title", Static).update(Text(
            f"A/B experiment {experiment['name']}, phase {experiment['phase']} "
            f"({experiment['logged']['impressions']:,} lists logged)", style="bold"))
        t = self.query_one(DataTable)
        rows = arm_rows(report, shares) if report else [(a["name"], a["target"], f"{100 * a['share']:.0f}%",
                                                        "0", "0", "-", "-", "-") for a in experiment["arms"]]
        if [tuple(str(c) for c in t.get_row_at(i)) for i in range(t.row_count)] != rows:
            t.clear()
            for r in rows:
                t.add_row(*r, key=r[0])
        lines = verdict_lines(report) if report else [("no feedback yet", "dim")]
        self.query_one(".arms-verdict", Static).update(Text("\n").join(Text(s, style=st) for s, st in lines))
