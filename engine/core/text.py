"""How the engine writes numbers and tables for people: a number in a table cell or a one-line note
(dataset reports), and the rich tables of the CLI and the benchmarks (any layer may print one)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def table(title: str, columns: list[str], rows: list[list[Any]], **kw: Any) -> Table:
    # no vertical rules: two characters more per column, so that wide tables fit 80 columns
    kw.setdefault("box", box.SIMPLE_HEAD)
    kw.setdefault("collapse_padding", True)
    t = Table(title=title, title_justify="left", **kw)
    cells = [[fmt(v) for v in r] for r in rows]
    for i, c in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
        width = max((len(line) for r in cells for line in r[i].splitlines() or [""]), default=0)
        # narrow terminals: numbers are never cut or wrapped (their min width), headers and text fold
        first = i == 0
        t.add_column(c, no_wrap=first, overflow="ellipsis" if first else "fold",
                     justify="right" if numeric else "left",
                     min_width=width if numeric else min(width, 33 if first else 6),
                     # a numeric column is as wide as its numbers (its header wraps between words)
                     max_width=33 if first else max(width, *map(len, c.split())) if numeric else None)
    for r in cells:
        t.add_row(*r)
    return t
