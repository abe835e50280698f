"""The online loop on loopback: a real A/B server, the traffic simulator replaying the tiny demo's
test sessions, and the report: the arm with the clearly higher offline Recall@10 (session-kNN,
0.60 on the tiny demo's test split, against popularity's 0.17) wins; every answered list and every
accepted feedback event is in the logs."""

from __future__ import annotations

import signal

import pytest

from engine.ab.report import experiment_report
from engine.ab.simulate import check_url, simulate
from engine.core.config import SimulateConfig
from engine.core.errors import InputError
from engine.serve.eventlog import read_log
from tests.test_serve import kill_group, start_server


def test_the_simulator_speaks_to_loopback_only():
    assert check_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_url("http://localhost:1") == "http://localhost:1"
    for url in ("http://10.0.0.1:8000", "http://example.com", "ftp://127.0.0.1"):
        with pytest.raises(InputError):
            check_url(url)


def test_the_better_arm_wins_online_and_nothing_is_lost(tiny_demo_ws):
    proc, ev = start_server(tiny_demo_ws, "--arm", "A=baseline:pop@demo-tiny", "--arm", "B=baseline:sknn@demo-tiny",
                            "--search", "exact", "--experiment", "sim-test")
    try:
        assert ev["experiment"]["name"] == "sim-test" and [a["share"] for a in ev["experiment"]["arms"]] == [0.5, 0.5]
        res = simulate(tiny_demo_ws, ev["url"], "demo-tiny", SimulateConfig(sessions=200, concurrency=2))
        assert res.errors == 0 and res.sessions == 65 and res.requests > 500     # the whole test split
        assert set(res.per_arm) == {"A", "B"}
    finally:
        proc.send_signal(signal.SIGTERM)       # a clean stop writes out the logs
        try:
            proc.wait(30)
        finally:
            kill_group(proc)
    folder = tiny_demo_ws.experiment("sim-test")
    assert len(read_log(folder, "impressions")[0]) == res.requests
    assert len(read_log(folder, "feedback")[0]) == res.feedback
    rep = experiment_report(tiny_demo_ws, "sim-test")
    a, b = rep["arms"]
    assert a["sessions"] + b["sessions"] == 65 and a["clicks"] + b["clicks"] == res.clicks
    assert b["ctr"] > 2 * a["ctr"]
    t = rep["tests"][0]
    assert t["verdict"] == "B better" and t["p_value"] < 0.05 and t["decided_at_sessions"] <= 65
    assert not rep["srm"]["mismatch"]
