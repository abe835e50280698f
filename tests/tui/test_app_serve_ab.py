"""The Serve screen with an A/B server: the form's arm B makes an A/B request (argv), and the arms
panel shows each arm's sessions, lists, CTR with its interval and conversions, and the sequential
test's verdict, from a report whose numbers are written out here."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Select, Static

from tests.tui.conftest import make_app
from tests.tui.helpers import settle, wait_for
from tests.tui.test_app_serve import HEALTH, PREV, add_running_server
from tui import ab_view as AV
from tui import serve_view as V
from tui.widgets.arms import ArmsPanel

EXPERIMENT = {"name": "ab-demo", "phase": 2, "logged": {"impressions": 1234, "feedback": 300, "lost": 0},
              "arms": [{"name": "A", "target": "baseline:pop@demo-tiny", "weight": 1.0, "share": 0.5, "run_id": None},
                       {"name": "B", "target": "run-a", "weight": 1.0, "share": 0.5, "run_id": "run-a"}]}


def arm(name, target, sessions, impressions, clicks, conv):
    return {"arm": name, "target": target, "weight": 1.0, "sessions": sessions, "impressions": impressions,
            "clicks": clicks, "ctr": clicks / impressions, "ctr_interval": (clicks / impressions - 0.01,
                                                                           clicks / impressions + 0.01),
            "session_ctr": clicks / impressions, "conversion_rate": conv, "conversion_interval": (0.0, 0.1)}


REPORT = {"experiment": "ab-demo", "phase": 2, "config": {"alpha": 0.05, "min_sessions": 20},
          "arms": [arm("A", "baseline:pop@demo-tiny", 100, 600, 30, 0.01), arm("B", "run-a", 104, 634, 190, 0.05)],
          "tests": [{"control": "A", "arm": "B", "difference": 0.25, "interval": (0.15, 0.35), "p_value": 0.0004,
                     "verdict": "B better", "decided_at_sessions": 61}],
          "srm": {"p_value": 0.78, "mismatch": False}}


def test_the_rows_and_the_verdict_in_words():
    rows = AV.arm_rows(REPORT, {"A": 0.5, "B": 0.5})
    assert rows == [("A", "baseline:pop@demo-tiny", "50%", "100", "600", "5.0%", "4.0-6.0%", "1.0%"),
                    ("B", "run-a", "50%", "104", "634", "30.0%", "29.0-31.0%", "5.0%")]
    lines = AV.verdict_lines(REPORT)
    assert lines[0] == ("B vs A: B better, session CTR +25.0 pts [15.0, 35.0], p 0.0004 (always valid, alpha 0.05)",
                        "bold green")
    assert lines[1][0] == "sample ratio ok (p 0.78); experiment ab-demo, phase 2"
    broken = {**REPORT, "srm": {"p_value": 1e-6, "mismatch": True}}
    assert "the split is broken" in AV.verdict_lines(broken)[-1][0]


async def test_arm_b_makes_an_ab_server_and_the_panel_shows_the_arms(full_ws: Path, monkeypatch):
    from tui.screens import serve as S
    monkeypatch.setattr(S, "POLL_S", 3600.0)             # every scrape is the test's
    app = make_app(full_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await app.switch_mode("serve")
        scr = app.screen
        await wait_for(pilot, lambda: scr.targets)
        scr.query_one("#s-target", Select).value = "baseline:pop@demo-tiny"
        scr.query_one("#s-arm-b", Select).value = "run-a"
        req = scr.form_request()
        assert req.arms == ("A=baseline:pop@demo-tiny", "B=run-a")
        assert req.args()[:5] == ["serve", "--arm", "A=baseline:pop@demo-tiny", "--arm", "B=run-a"]
        assert req.title() == "serve A/B baseline:pop@demo-tiny vs run-a on 127.0.0.1:8000"
        scr.query_one("#s-workers").value = "2"
        try:
            scr.form_request()
            raise AssertionError("workers 2 with arms was accepted")
        except Exception as e:
            assert "one process" in str(e)
        panel = scr.query_one("#serve-arms", ArmsPanel)
        assert not panel.display
        add_running_server(app)
        scr._adopt_job()
        from engine.serve.scrape import parse_metrics
        prev = parse_metrics(PREV)
        scr._scraped(scr.url(), 0.0, prev, {**HEALTH, "experiment": EXPERIMENT}, V.stats_rows(None, prev, 0.0), [],
                     "demo-tiny", REPORT)
        await pilot.pause()
        assert panel.display
        table = panel.query_one(DataTable)
        assert [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)] == AV.arm_rows(
            REPORT, {"A": 0.5, "B": 0.5})
        assert "B better" in str(panel.query_one(".arms-verdict", Static).render())
        assert "phase 2 (1,234 lists logged)" in str(panel.query_one(".arms-title", Static).render())
        assert "A/B test of baseline:pop@demo-tiny and run-a" in str(scr.query_one("#serve-head", Static).render())
        assert "\"session_id\": \"visitor-1\"" in str(scr.query_one("#serve-curl", Static).render())
