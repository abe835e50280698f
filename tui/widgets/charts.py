"""Charts on textual-plotext: series are set any time, drawn at most a few times a second, and
thinned to about twice the widget's width before plotext sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rich.text import Text
from textual_plotext import PlotextPlot

from tui.state import thin

REDRAW_INTERVAL = 0.3     # seconds: at most ~3 redraws a second, however fast events arrive
COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "white")


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str | None = None
    marker: str | None = None


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
        if d.bars is not None:
            labels, values = d.bars
            plt.bar(labels, values, color=COLORS[0], width=0.4, marker="hd")
        else:
            for i, s in enumerate(d.series):
                xs, ys = thin(list(s.xs), list(s.ys), 2 * width)
                if not xs:
                    continue
                kw = {"label": s.label} if len(d.series) > 1 or s.label else {}
                plt.plot(xs, ys, color=s.color or COLORS[i % len(COLORS)], marker=s.marker or "braille", **kw)
            for x in d.vlines:
                plt.vline(x, "gray")
            if d.xlog:
                plt.xscale("log")
            if d.ylim is not None:
                plt.ylim(*d.ylim)
        self.draws += 1
        return super().render()
