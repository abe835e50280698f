"""The Tune screen: a stored study's trials, best configuration and chart; a real tuning job of a
baseline started from the form; the form refuses what `sessrec tune` refuses."""

from __future__ import annotations

from pathlib import Path

import optuna

from engine.core.schema import JobKind, JobStatus
from engine.core.workspace import Workspace
from engine.tune import study as S
from engine.tune.setup import TuneSetup
from tests.tui.conftest import make_app
from tests.tui.helpers import notifications, settle, wait_for


def _fake_study(ws_root: Path) -> None:
    """A study with three finished trials and one pruned one (no runs behind them)."""
    ws = Workspace.open(ws_root)
    setup = TuneSetup("demo-tiny", "itemknn", "mrr@20", "prefixes")
    study = optuna.create_study(study_name="fake", storage=S.storage(ws), direction="maximize")
    study.set_user_attr("setup", setup.to_dict())        # (no queued defaults trial: only these four)
    dist = {"neighbors": optuna.distributions.IntDistribution(10, 500, log=True)}
    for n, value in ((40, 0.25), (80, 0.5), (20, 0.375)):
        study.add_trial(optuna.trial.create_trial(params={"neighbors": n}, distributions=dist, value=value,
                                                  user_attrs={"run_id": f"itemknn-{n}"}))
    study.add_trial(optuna.trial.create_trial(params={"neighbors": 300}, distributions=dist,
                                              state=optuna.trial.TrialState.PRUNED))


async def test_a_study_shows_its_trials_best_and_chart(tiny_ws: Path) -> None:
    _fake_study(tiny_ws)
    app = make_app(tiny_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f7")
        await wait_for(pilot, lambda: app.screen.report is not None)
        await settle(pilot)
        scr = app.screen
        trials = scr.query_one("#trials")
        assert trials.row_count == 4
        assert [str(c) for c in trials.get_row_at(1)[:4]] == ["1", "complete", "0.5000", "itemknn-80"]
        assert str(trials.get_row_at(3)[1]) == "pruned"
        best = str(scr.query_one("#study-best").render())
        assert "trial 1: mrr@20 0.5000 (run itemknn-80)" in best
        assert "sessrec train --dataset demo-tiny --model itemknn --seed 0 --val-protocol prefixes " \
               "--neighbors 80" in best
        value, running = scr.query_one("#tune-chart").data.series
        assert (list(value.xs), list(value.ys)) == ([0, 1, 2], [0.25, 0.5, 0.375])
        assert list(running.ys) == [0.25, 0.5, 0.5]
        studies = scr.query_one("#studies")
        assert [str(c) for c in studies.get_row_at(0)] == ["4/4", "0.5000", "fake"]   # pruned: finished too


async def test_the_form_starts_a_real_tuning_job(tiny_ws: Path) -> None:
    app = make_app(tiny_ws, child=False)               # the real engine
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f7")
        await settle(pilot)
        scr = app.screen
        scr.query_one("#u-trials").value = "0"
        scr.action_start()
        await pilot.pause()
        assert any("trials: expected a whole number >= 1" in n for n in notifications(app))
        scr.query_one("#u-trials").value = "2"
        scr.action_start()
        await wait_for(pilot, lambda: app.controller.jobs.jobs, timeout=5)
        job = next(iter(app.controller.jobs.jobs.values()))
        assert job.kind == JobKind.TUNE
        await wait_for(pilot, lambda: job.status.finished, timeout=60)
        assert job.status == JobStatus.DONE, (job.error, job.log_lines[-5:])
        # the job's end makes the screen read the study again (a read while trial 2 ran shows it running)
        await wait_for(pilot, lambda: scr.report is not None
                       and [t["state"] for t in scr.report["trials"]] == ["complete", "complete"], timeout=10)
        assert scr.report["study"] == "demo-tiny-itemknn-mrr@20"
        run_ids = {t["run_id"] for t in scr.report["trials"]}
        assert run_ids <= set(Workspace.open(tiny_ws).run_ids())      # each trial is a run
        assert job.stages["tune"].done == 2                              # the job's progress: trials
