"""The app's logic without a UI: formatting, chart thinning and ticks, forms generated from the
engine's configs, recommender sources, the palette derived from the bindings, the controller."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.config import AttentionGNNConfig, SKNNConfig, TrainConfig
from tui import format as F
from tui.forms import FormError, check_config, parse_fields, text_of
from tui.widgets.charts import nice_ticks, thin


def test_thin_keeps_bounds_and_last_point() -> None:
    xs = list(range(1000))
    ys = [float(i) for i in xs]
    tx, ty = thin(xs, ys, 50)
    assert len(tx) == 50 and tx[-1] == 999 and ty[-1] == 999.0
    assert all(a <= b for a, b in zip(tx, tx[1:]))
    assert thin([1, 2], [None, 3.0], 10) == ([2], [3.0])


@pytest.mark.parametrize("lo, hi, labels", [
    (9.018, 9.108, ["9.000", "9.025", "9.050", "9.075", "9.100", "9.125"]),   # the irregular ticks seen
    (0.0, 1.0, ["0.00", "0.25", "0.50", "0.75", "1.00"]),
    (0.1125, 0.65, ["0.0", "0.2", "0.4", "0.6", "0.8"]),
    (0.0, 23808.0, ["0", "10,000", "20,000", "30,000"]),
    (3.0, 3.0, ["2.6", "2.8", "3.0", "3.2", "3.4"]),
])
def test_nice_ticks_are_round_and_evenly_spaced(lo: float, hi: float, labels: list[str]) -> None:
    ticks, got, (a, b) = nice_ticks(lo, hi, 5)
    assert got == labels
    steps = {round(y - x, 9) for x, y in zip(ticks, ticks[1:])}
    assert len(steps) == 1 and a <= lo and b >= hi


def test_formatting() -> None:
    assert F.fmt_duration(None) == "-" and F.fmt_duration(3.25) == "3.2s" and F.fmt_duration(75) == "1m15s"
    assert F.fmt_duration(7260) == "2h01m"
    assert F.fmt_num(1234) == "1,234" and F.fmt_num(0.12345) == "0.1235" and F.fmt_num(6.0) == "6"
    assert F.fmt_num(float("nan")) == "-" and F.fmt_num(None) == "-"
    assert F.fmt_bar(0.5, 10) == "[#####.....]"
    rows = [{"v": 0.2}, {"v": None}, {"v": 0.5}]
    assert [r["v"] for r in F.sort_rows(rows, "v", reverse=True)] == [0.5, 0.2, None]
    assert [r["v"] for r in F.sort_rows(rows, "v")] == [0.2, 0.5, None]


def test_form_values_are_parsed_and_checked_by_the_engine_configs() -> None:
    assert parse_fields(TrainConfig, {"epochs": "12", "loss": "bpr"}) == {"epochs": 12, "loss": "bpr"}
    with pytest.raises(FormError, match="epochs: expected a whole number"):
        parse_fields(TrainConfig, {"epochs": "1.5"})
    with pytest.raises(FormError, match="epochs: must be >= 1"):
        parse_fields(TrainConfig, {"epochs": "0"})
    with pytest.raises(FormError, match="k: expected a whole number, got 'many'"):
        parse_fields(SKNNConfig, {"k": "many"})
    assert parse_fields(AttentionGNNConfig, {"use_pe": "off", "dropout": "0.5"}) == {"use_pe": False, "dropout": 0.5}
    # cross-field checks come from the config class too
    with pytest.raises(FormError, match="divisible by heads"):
        check_config(AttentionGNNConfig, {"hidden": 3, "heads": 2}, "cpu", "model 'gat'")
    cfg = check_config(AttentionGNNConfig, {"dropout": 0.2}, "cpu", "model 'gat'")
    assert cfg.hidden == 128 and cfg.changed(AttentionGNNConfig.defaults("cpu")) == {"dropout": 0.2}
    assert AttentionGNNConfig.defaults("cuda").hidden == 256
    assert text_of(True) == "true" and text_of(cfg.readout) == "attention"


def test_source_keys_and_typed_ids() -> None:
    from tui.screens.recommend import parse_ids, parse_source_key, source_key
    assert parse_ids("1, 2 3,,4") == ([1, 2, 3, 4], None)
    ids, err = parse_ids("1 abc")
    assert ids == [] and "'abc'" in err
    ids, err = parse_ids(str(2 ** 64))
    assert ids == [] and "out of range" in err
    assert parse_source_key(source_key("baseline", "sknn", "demo")) == ("baseline", "sknn", "demo")
    assert parse_source_key("run:r1") == ("run", "r1", None)


def test_short_run_ids() -> None:
    from tui.screens.runs import short_run_id
    assert short_run_id("gat-1127-2100", "gat") == "1127-2100"
    assert short_run_id("run-a", "gat") == "run-a"


def test_palette_entries_derive_from_the_bindings(tmp_path: Path) -> None:
    from tests.tui.conftest import make_app
    from tui.commands import palette_entries
    app = make_app(tmp_path / "ws", child=False)
    entries = {title: help_text for title, _, help_text in palette_entries(app)}
    for mode, screen in app.MODES.items():
        for b in screen.BINDINGS:
            assert f"{screen.TITLE_TEXT}: {b.description}" in entries, (mode, b)
    assert entries["Train: Start"].startswith("ctrl+s: start a run")
    assert entries["Datasets: show"].startswith("F2:") and "Quit" in entries


def test_recommend_opens_on_the_newest_completed_run_else_session_knn(full_ws: Path, tmp_path: Path) -> None:
    from engine.core.workspace import Workspace
    from tui.controller import Controller
    c = Controller(Workspace.open(full_ws), load_history=False)
    c.list_runs()
    sources = ["run:run-a", "run:run-b", "run:run-c", "baseline:pop@demo-tiny", "baseline:sknn@demo-tiny"]
    assert c.default_source(sources) == "run:run-b"       # run-c is newer but failed
    assert c.default_source(sources[3:]) == "baseline:sknn@demo-tiny"
    c.prefer_source("run:run-a")                          # a choice made elsewhere wins once
    assert c.take_preferred_source() == "run:run-a" and c.take_preferred_source() is None
    empty = Controller(Workspace.open(tmp_path / "empty"), load_history=False)
    assert empty.default_source([]) is None


def test_the_serve_screens_sample_items_have_their_names(tiny_ws):
    """With item metadata the sample request's items are named under the curl line; without, ids only."""
    from engine.core.workspace import Workspace
    from engine.data.manifest import Dataset
    from engine.data.pipeline import build
    from tui.serve_view import names_line, sample_items, sample_names
    ws = Workspace.open(tiny_ws)
    items = sample_items(ws, "demo-tiny")
    assert len(items) == 2 and sample_names(ws, "demo-tiny", items) == {}
    ds = Dataset.load(ws, "demo-tiny")
    ds.attach_items(list(ws.dataset("demo-tiny").demo_item_files), None)
    build(Dataset.load(ws, "demo-tiny"))
    from engine.data.item_meta import ItemMeta
    meta = ItemMeta.read(ws.dataset("demo-tiny").item_meta, ws.dataset("demo-tiny").item_categories)
    want = {i: d["name"] for i, d in zip(items, meta.describe(items))}
    assert sample_names(ws, "demo-tiny", items) == want
    assert names_line(items, want) == f"{items[0]}: {want[items[0]]}, {items[1]}: {want[items[1]]}"
    assert names_line(items, {}) == ""
