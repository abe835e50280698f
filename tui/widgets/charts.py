"""Charts on textual-plotext: series are set any time, drawn at most a few times a second, thinned
to about twice the widget's width before plotext sees them, with round, evenly spaced y ticks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from rich.text import Text
from textual_plotext import PlotextPlot

REDRAW_INTERVAL = 0.3     # seconds: at most ~3 redraws a second, however fast events arrive
COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "white")


def thin(xs: Sequence[float], ys: Sequence[float | None], n: int) -> tuple[list[float], list[float]]:
    """At most ~`n` points: bucket means (x and y) over equal index ranges; None values dropped.
    The last point is kept as it is (the newest value is what people watch)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y == y]
    n = max(2, int(n))
    if len(pts) <= n:
        return [p[0] for p in pts], [p[1] for p in pts]
    out_x, out_y = [], []
    size = len(pts) / (n - 1)
    for b in range(n - 1):
        lo, hi = int(b * size), max(int(b * size) + 1, int((b + 1) * size))
        chunk = pts[lo:min(hi, len(pts) - 1)] or pts[lo:lo + 1]
        out_x.append(sum(p[0] for p in chunk) / len(chunk))
        out_y.append(sum(p[1] for p in chunk) / len(chunk))
    out_x.append(pts[-1][0])
    out_y.append(pts[-1][1])
    return out_x, out_y


def nice_ticks(lo: float, hi: float, target: int = 5,
               integer: bool = False) -> tuple[list[float], list[str], tuple[float, float]]:
    """Round, evenly spaced ticks covering [lo, hi]: a step of 1, 2, 2.5 or 5 times a power of ten, about
    `target` ticks (`integer`: a whole step, for steps and epochs). Returns (ticks, labels, axis
    limits), the limits on ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], [], (0.0, 1.0)
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    if integer and step < 1 or integer and step != int(step):
        step = max(1.0, float(math.ceil(step)))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [round(i * step, 12) for i in range(first, last + 1)]
    decimals = next(d for d in range(12) if abs(step * 10 ** d - round(step * 10 ** d)) < 1e-6)
    labels = [f"{t:,.{decimals}f}" if abs(t) < 1e6 else f"{t:.2g}" for t in ticks]
    return ticks, labels, (ticks[0], ticks[-1])


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Powers of ten within [lo, hi] (a log axis), labelled as whole numbers."""
    if lo <= 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    ticks = [10.0 ** k for k in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)]
    return ticks, [f"{t:,.0f}" for t in ticks]


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str | None = None
    marker: str | None = None
    scatter: bool = False          # points only (values of separate trials, not a curve)


@dataclass
class ChartData:
    title: str = ""
    xlabel: str = ""
    series: list[Series] = field(default_factory=list)
    vlines: list[float] = field(default_factory=list)     # e.g. the best epoch
    xlog: bool = False
    bars: tuple[list[str], list[float]] | None = None     # a bar chart instead of lines
    empty_text: str = "no data yet"
    ylim: tuple[float, float] | None = None


class Chart(PlotextPlot):
    """A line or bar chart; `update_data()` is cheap, the redraw happens on a timer."""

    DEFAULT_CSS = """
    Chart { height: 1fr; width: 1fr; min-height: 5; }
    """

    def __init__(self, data: ChartData | None = None, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.data = data or ChartData()
        self._dirty = True
        self.draws = 0          # how many times plotext built the figure (tests check throttling)

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_INTERVAL, self._tick)

    def update_data(self, data: ChartData) -> None:
        self.data = data
        self._dirty = True

    def _tick(self) -> None:
        if self._dirty:
            self.refresh()

    def on_resize(self) -> None:
        self._dirty = True

    def _has_data(self) -> bool:
        d = self.data
        if d.bars is not None:
            return bool(d.bars[0])
        return any(any(y is not None for y in s.ys) for s in d.series)

    def render(self):  # type: ignore[override]
        self._dirty = False
        d = self.data
        if not self._has_data():
            return Text(f"{d.title}\n{d.empty_text}" if d.title else d.empty_text, style="dim",
                        justify="center")
        plt = self.plt
        plt.clear_figure()
        width = max(10, self.size.width)
        if d.title:
            plt.title(d.title)
        if d.xlabel and self.size.height >= 10:
            plt.xlabel(d.xlabel)
        target = max(2, min(6, (self.size.height - 4) // 2))     # about one tick per two rows
        if d.bars is not None:
            labels, values = d.bars
            plt.bar(labels, values, color=COLORS[0], width=0.4, marker="hd")
            ticks, tick_labels, lim = nice_ticks(0.0, max(values, default=1.0), target)
        else:
            lo, hi, xlo, xhi, whole = math.inf, -math.inf, math.inf, -math.inf, True
            for i, s in enumerate(d.series):
                xs, ys = thin(list(s.xs), list(s.ys), 2 * width)
                if not xs:
                    continue
                lo, hi = min(lo, *ys), max(hi, *ys)
                xlo, xhi = min(xlo, *xs), max(xhi, *xs)
                whole = whole and all(float(x).is_integer() for x in s.xs)
                kw = {"label": s.label} if len(d.series) > 1 or s.label else {}
                draw = plt.scatter if s.scatter else plt.plot
                draw(xs, ys, color=s.color or COLORS[i % len(COLORS)], marker=s.marker or "braille", **kw)
            for x in d.vlines:
                plt.vline(x, "gray")
            if d.xlog:
                plt.xscale("log")
                xticks, xlabels = log_ticks(xlo, xhi)
            else:               # steps and epochs are whole numbers: so are their ticks
                xt, xl, _ = nice_ticks(xlo, xhi, max(2, min(8, width // 10)), integer=whole)
                inside = [(t, lbl) for t, lbl in zip(xt, xl) if xlo - 1e-9 <= t <= xhi + 1e-9]
                xticks, xlabels = [t for t, _ in inside], [lbl for _, lbl in inside]
            if xticks:
                plt.xticks(xticks, xlabels)
            ticks, tick_labels, lim = nice_ticks(*(d.ylim or (lo, hi)), target)
        if ticks:
            plt.ylim(*lim)
            plt.yticks(ticks, tick_labels)
        self.draws += 1
        return super().render()
