"""The A/B report: the statistics against hand-computed values, the sequential test's error rate
and power on simulated data, and the report of a hand-written experiment log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.ab.report import experiment_report
from engine.ab.stats import cs_half_width, log_lr, sample_ratio, sequential_test, welch_variance, wilson
from engine.core.config import ABTestConfig
from engine.core.errors import InputError
from engine.core.workspace import Workspace


def test_wilson_interval_is_the_textbook_one():
    z, n, p = 1.959963984540054, 100, 0.1          # Wilson (1927): centre and half width by hand
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(10, 100, 0.05) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson(10, 100, 0.05) == pytest.approx((0.05523, 0.17437), abs=1e-5)
    assert wilson(0, 0, 0.05) == (None, None)


def test_the_mixture_ratio_and_its_confidence_sequence():
    # d = 0, V = 1, tau = 1: log N(0; 0, 2) - log N(0; 0, 1) = -log(2) / 2
    assert log_lr(np.array([0.0]), np.array([1.0]), 1.0)[0] == pytest.approx(-0.5 * np.log(2))
    # at the confidence sequence's edge the ratio is exactly 1 / alpha
    h = cs_half_width(0.01, 0.05, 0.05)
    assert log_lr(np.array([h]), np.array([0.01]), 0.05)[0] == pytest.approx(np.log(20))
    assert h == pytest.approx(0.55743, abs=1e-5)


def test_sample_ratio_mismatch():
    assert sample_ratio([50, 50], [1, 1]) == pytest.approx(1.0)
    assert sample_ratio([30, 70], [1, 1]) == pytest.approx(6.334e-5, rel=1e-3)     # chi2 = 16, 1 dof
    assert sample_ratio([25, 75], [1, 3]) == pytest.approx(1.0)
    assert sample_ratio([5, 0], [1, 0]) is None and sample_ratio([5, 1], [1, 0]) == 0.0
    assert sample_ratio([0, 0], [1, 1]) is None


def test_the_sequential_test_holds_its_error_rate_when_watched_and_finds_a_real_difference():
    rng = np.random.default_rng(0)
    false = 0
    for rep in range(200):                 # A/A: looked at after every one of 600 sessions
        arm = np.where(rng.random(600) < 0.5, "A", "B")
        ctr = rng.binomial(5, 0.2, 600) / 5
        false += sequential_test(arm, ctr, "A", "B", 0.05, 0.05, 20).p_value <= 0.05
    assert false <= 200 * 0.05 + 6                 # nominal 10 of 200 (binomial sd ~3)
    arm = np.where(rng.random(600) < 0.5, "A", "B")
    ctr = rng.binomial(5, np.where(arm == "B", 0.4, 0.2)) / 5
    seq = sequential_test(arm, ctr, "A", "B", 0.05, 0.05, 20)
    assert seq.p_value < 1e-4 and seq.verdict(0.05, "A", "B") == "B better" and seq.decided_at < 300
    a, b = ctr[arm == "A"], ctr[arm == "B"]
    assert seq.difference == pytest.approx(b.mean() - a.mean())
    var = welch_variance(a, b)                     # the last look's variance is statsmodels' Welch's
    assert seq.interval[1] - seq.difference == pytest.approx(cs_half_width(var, 0.05, 0.05))


def write_log(folder, kind: str, records: list[dict]) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
    with open(folder.new_log(kind, "20260101T000000", 1, 1), "w") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n")


def test_report_of_a_hand_written_experiment(tmp_path):
    ws = Workspace.open(tmp_path)
    folder = ws.experiment("hand")
    arms = [{"name": "A", "target": "r1", "weight": 1.0, "run_id": "r1"},
            {"name": "B", "target": "r2", "weight": 1.0, "run_id": "r2"}]
    folder.root.mkdir(parents=True)
    folder.state.write_text(json.dumps({"version": 1, "name": "hand", "phases": [
        {"phase": 1, "started": 0, "why": "start", "arms": arms}, {"phase": 2, "started": 50, "why": "split", "arms": arms}]}))
    imp = [  # session a1 (arm A): two lists; b1, b2 (arm B): one each; phase 1 is ignored
        {"id": "x", "t": 1, "phase": 1, "session": "old", "arm": "A", "target": "r1", "items": [1], "k": 2, "n": 1},
        {"id": "1", "t": 100, "phase": 2, "session": "a1", "arm": "A", "target": "r1", "items": [5, 6], "k": 2, "n": 1},
        {"id": "2", "t": 102, "phase": 2, "session": "a1", "arm": "A", "target": "r1", "items": [7, 8], "k": 2, "n": 2},
        {"id": "3", "t": 101, "phase": 2, "session": "b1", "arm": "B", "target": "r2", "items": [5, 9], "k": 2, "n": 1},
        {"id": "4", "t": 103, "phase": 2, "session": "b2", "arm": "B", "target": "r2", "items": [3, 4], "k": 2, "n": 1}]
    fb = [
        {"t": 101.5, "phase": 2, "session": "a1", "arm": "A", "item": 6, "event": "click"},     # -> impression 1
        {"t": 103, "phase": 2, "session": "a1", "arm": "A", "item": 6, "event": "click"},       # again -> still 1
        {"t": 101.2, "phase": 2, "session": "b1", "arm": "B", "item": 9, "event": "click"},     # -> impression 3
        {"t": 100.5, "phase": 2, "session": "b2", "arm": "B", "item": 3, "event": "click"},     # before it was shown
        {"t": 104, "phase": 2, "session": "b1", "arm": "B", "item": 9, "event": "transaction"},
        {"t": 104, "phase": 2, "session": "b2", "arm": "B", "item": 4, "event": "addtocart"}]
    write_log(folder, "impressions", imp)
    write_log(folder, "feedback", fb)
    rep = experiment_report(ws, None, None, ABTestConfig(min_sessions=2))
    assert rep["experiment"] == "hand" and rep["phase"] == 2 and rep["k"] == [2]
    a, b = rep["arms"]
    assert (a["sessions"], a["impressions"], a["clicks"], a["ctr"], a["session_ctr"]) == (1, 2, 1, 0.5, 0.5)
    assert (b["sessions"], b["impressions"], b["clicks"], b["ctr"], b["session_ctr"]) == (2, 2, 1, 0.5, 0.5)
    assert (a["conversions"], b["conversions"], b["conversion_rate"], b["addtocarts"]) == (0, 1, 0.5, 1)
    assert rep["unattributed_clicks"] == 1 and rep["feedback_events"] == 6
    assert rep["srm"]["observed"] == [1, 2] and rep["tests"][0]["verdict"] == "no difference yet"
    assert rep["tests"][0]["looks"] == 0                # one session in A: below min_sessions
    assert experiment_report(ws, "hand", 1)["arms"][0]["impressions"] == 1
    with pytest.raises(InputError, match="no phase 7"):
        experiment_report(ws, "hand", 7)
    with pytest.raises(InputError, match="not found"):
        experiment_report(ws, "nope")
