"""The pieces that make the xl demo (30M events) fit: O(n) distinct counts, item encoding by lookup
table, the oracle stage in one ranking pass, and the xl preset's YooChoose-like shape."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from engine.core.schema import Protocol
from engine.data.demo import generate_demo
from engine.data.demo.generator import DEMO_SIZES
from engine.data.demo.oracle import oracle_recall, oracle_report
from engine.data.items import _LUT_MIN, ItemIndex
from engine.data.sessions import Sessions, count_distinct


def test_count_distinct_by_hand():
    assert count_distinct(np.array([], dtype=np.int64)) == 0
    assert count_distinct(np.array([5, 3, 5, 5, 9])) == 3
    assert count_distinct(np.array([-4, -4, 7, 0], dtype=np.int64)) == 3          # range below 0
    assert count_distinct(np.array([1, 2**40, 1, 2**40 + 1])) == 3                 # sparse: np.unique
    assert count_distinct(np.array([2, 1, 2], dtype=np.int32)) == 2


def test_encode_lookup_table_matches_binary_search():
    rng = np.random.default_rng(0)
    index = ItemIndex(np.array([7, 3, 1000, 12, 40], dtype=np.int64), np.ones(5, dtype=np.int64))
    raw = rng.integers(0, 1100, size=_LUT_MIN + 5)                     # many ids: table path
    got = index.encode(raw)
    want = np.zeros(len(raw), dtype=np.int32)
    for i, r in enumerate([7, 3, 1000, 12, 40]):
        want[raw == r] = i + 1
    assert got.dtype == np.int32 and np.array_equal(got, want)
    assert np.array_equal(index.encode(raw[:10]), want[:10])           # few ids: binary search


def test_oracle_report_equals_separate_calls(tmp_path):
    generate_demo(tmp_path / "events.csv", tmp_path / "truth.npz", size="tiny", seed=1)
    from engine.core.config import DataConfig
    from engine.data.formats import read_events
    from engine.data.sessionize import sessionize
    sessions, _ = sessionize(read_events(tmp_path / "events.csv", "retailrocket").table,
                             DataConfig(format="retailrocket"))
    test, train = sessions.take(np.arange(len(sessions)) % 3 == 0), sessions.take(np.arange(len(sessions)) % 3 > 0)
    known = np.unique(train.items)
    got = oracle_report(tmp_path / "truth.npz", test, ks=(10, 20), known_items=known, chunk_events=500)
    want = {}
    for p in Protocol:
        for k in (10, 20):
            want[f"{p}@{k}"] = oracle_recall(tmp_path / "truth.npz", test, k=k, protocol=p)
            want[f"known_{p}@{k}"] = oracle_recall(tmp_path / "truth.npz", test, k=k, protocol=p,
                                                   known_items=known)
    assert json.dumps(got) == json.dumps(want)                  # same keys, order and floats
    assert got["last@10"]["n"] == int((test.lengths >= 2).sum()) > 0


def test_xl_shape_scaled_down(tmp_path, monkeypatch):
    """The xl preset at 1/250 of its visitors: YooChoose's shape (mean ~3.6 events per session,
    ~55% of sessions 1-2 events, few returning visitors), not its size."""
    xl = DEMO_SIZES["xl"]
    assert xl.n_visitors == 7_650_000 and xl.n_items == 56_000
    small_xl = dataclasses.replace(xl, n_visitors=30_600, n_items=4000, n_clusters=40)
    monkeypatch.setitem(DEMO_SIZES, "xl-test", small_xl)
    st = generate_demo(tmp_path / "e.csv", tmp_path / "t.npz", size="xl-test")
    mean_len = st["events"] / st["sessions"]
    assert 3.4 < mean_len < 3.9
    assert 0.42 < st["sessions_min3"] / st["sessions"] < 0.48
    assert 1.0 < st["sessions"] / st["visitors"] < 1.15
    assert st["end"] - st["start"] <= 183 * 86_400_000
