"""`sessrec tune`: studies on the tiny demo (baseline and GNN), resume, pruning, the test split left
alone, search-space bounds, and the errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from engine.cli import build_parser
from engine.cli import main as cli
from engine.core.config import TrainConfig
from engine.core.schema import RunStatus
from engine.models.registry import SPECS, get_spec
from engine.runs import RunStore
from engine.tune import spaces
from engine.tune import study as S
from engine.tune.objective import Objective, PruneHook
from engine.tune.setup import TuneSetup
from tests.conftest import small_cfg

GNN_FLAGS = ["--epochs", "1", "--hidden", "16", "--layers", "1", "--batch-size", "256", "--warmup-steps", "2",
             "--device", "cpu"]


def tune(ws, capsys, *args: str) -> tuple[int, dict]:
    rc = cli(["--workspace", str(ws.root), "--events", "jsonl", "tune", "--dataset", "demo-tiny", *args])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    result = next((ln for ln in lines if ln.get("type") == "result"), {})
    return rc, {"result": result.get("study"), "trials": [ln for ln in lines if ln.get("type") == "trial"],
                "errors": [ln["error"] for ln in lines if ln.get("type") == "error"]}


def test_itemknn_study_reports_the_best_resumes_and_never_reads_test(tiny_demo_ws, capsys, monkeypatch):
    import engine.train.loop as loop
    splits = []
    real = loop.evaluate_split

    def spy(model, data, split, *a, **kw):
        splits.append(str(split))
        return real(model, data, split, *a, **kw)
    monkeypatch.setattr(loop, "evaluate_split", spy)
    ws = tiny_demo_ws
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "3", "--metric", "recall@10")
    assert rc == 0, out["errors"]
    assert ws.studies_db.exists()
    rep = out["result"]
    assert rep["study"] == "demo-tiny-itemknn-recall@10"
    assert [t["number"] for t in out["trials"]] == [0, 1, 2]          # one live line per trial
    values = {t["number"]: t["value"] for t in rep["trials"]}
    assert all(t["state"] == "complete" for t in rep["trials"])
    best = rep["best"]
    assert best["value"] == max(values.values()) and values[best["number"]] == best["value"]
    assert [t["value"] for t in rep["top"]] == sorted(values.values(), reverse=True)
    # the trials are ordinary runs: validation only, the trial's value is the run's val metric
    assert set(splits) == {"val"}
    # trial 0 is the untuned model: every tuned field at its default
    first = S.load(ws, "demo-tiny-itemknn-recall@10").trials[0]
    assert first.user_attrs.get("defaults") is True
    assert first.params == {n: v for n, v in get_spec("itemknn").resolve().to_dict().items() if n in first.params}
    assert set(first.params) == set(spaces.space_for("itemknn"))
    store = RunStore(ws)
    for t in rep["trials"]:
        st = store.get(t["run_id"])
        assert st.status == RunStatus.COMPLETED and st.test == {}
        assert st.best_val["recall@10"] == pytest.approx(t["value"])
    # the printed command trains exactly the best configuration
    argv = best["command"].split()[1:]
    args = build_parser().parse_args(argv)
    from engine.cli.train_cmds import train_config_from_args
    cfg = train_config_from_args(args)
    saved = TrainConfig.from_dict(json.loads(ws.run(best["run_id"]).config.read_text())["train"])
    assert replace(cfg, model_params=get_spec("itemknn").resolve(cfg.model_params).to_dict()) == saved

    # the same command with --trials 5 adds two trials; the first three are unchanged
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "5", "--metric", "recall@10")
    assert rc == 0
    assert [t["number"] for t in out["trials"]] == [3, 4]
    assert {t["number"]: t["value"] for t in out["result"]["trials"][:3]} == values
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "5", "--metric", "recall@10")
    assert rc == 0 and out["trials"] == [] and len(out["result"]["trials"]) == 5

    # --show prints it without running; the list names it with its count
    assert cli(["--workspace", str(ws.root), "tune", "--show", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["studies"]
    assert [(s["study"], s["finished"], s["best"]) for s in listed] == [
        ("demo-tiny-itemknn-recall@10", 5, max(t["value"] for t in out["result"]["trials"]))]


def test_gnn_study_reports_each_epoch(tiny_demo_ws, capsys):
    rc, out = tune(tiny_demo_ws, capsys, "--model", "graph_transformer", "--trials", "2", "--study", "gnn",
                   *GNN_FLAGS)
    assert rc == 0, out["errors"]
    trials = out["result"]["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete"]
    for t in trials:
        # one epoch: the value reported after it is the best epoch's, the trial's value
        assert t["intermediate"] == {"1": t["value"]}          # (JSON keys)
        assert set(t["params"]) == {"dropout", "scale", "readout", "pos_emb", "global_k", "switch", "contrastive",
                                    "highway", "lr", "weight_decay", "heads"}
    study = S.load(tiny_demo_ws, "gnn")
    setup = S.setup_of(study)
    assert setup.params == {"hidden": 16, "layers": 1} and setup.train["epochs"] == 1


class FakeTrial:
    def __init__(self, prune_at: int) -> None:
        self.reported: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reported) >= self.prune_at


def test_prune_hook_reports_the_metric_and_stops_when_told():
    trial = FakeTrial(prune_at=2)
    hook = PruneHook(trial, "mrr@20")
    assert hook(1, {"metrics": {"mrr@20": 0.25, "recall@10": 0.5}}) is None
    assert hook(2, {"metrics": {"mrr@20": 0.125}}) == "pruned"
    assert trial.reported == [(0.25, 1), (0.125, 2)] and hook.pruned_at == 2


def test_a_run_stopped_by_the_epoch_hook_is_recorded_as_pruned(tiny_demo_ws):
    from engine.train.loop import fit
    seen = []
    final = fit(small_cfg(epochs=3, model_params={"hidden": 16, "heads": 2, "layers": 1}), tiny_demo_ws,
                on_epoch=lambda e, val: seen.append(e) or "pruned", evaluate_test=False)
    assert seen == [1]
    assert final["status"] == "stopped" and final["reason"] == "pruned" and final["epochs_run"] == 1
    st = RunStore(tiny_demo_ws).get(final["run_id"])
    assert (st.status, st.reason, st.test) == (RunStatus.STOPPED, "pruned", {})


def test_gnn_trials_are_not_pruned_before_epoch_3(tiny_demo_ws):
    study = S.open_for_trials(tiny_demo_ws, "pruning-warmup", TuneSetup("demo-tiny", "graph_transformer",
                                                                        "mrr@20", "prefixes"))
    for value in (0.5, 0.6, 0.7):                      # three finished trials: the median per epoch
        t = study.ask()
        for epoch in (1, 2, 3):
            t.report(value, epoch)
        study.tell(t, value)
    low = study.ask()
    for epoch in (1, 2):
        low.report(0.01, epoch)
        assert not low.should_prune(), epoch            # far below the median, but still warming up
    low.report(0.01, 3)
    assert low.should_prune() and S.PRUNE_FROM_EPOCH == 3


def test_an_interrupted_trial_is_failed_and_a_dead_ones_running_trial_too(tiny_demo_ws):
    from engine.train.loop import StopFlag
    ws = tiny_demo_ws
    setup = TuneSetup("demo-tiny", "itemknn", "mrr@20", "prefixes")
    stop = StopFlag()
    stop.request("SIGINT")
    study = S.open_for_trials(ws, "interrupted", setup)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(Objective(ws, setup, spaces.space_for("itemknn"), stop), n_trials=3)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    # a process killed mid-trial leaves it RUNNING: the next one to open the study fails it
    study.ask()
    assert study.trials[-1].state == optuna.trial.TrialState.RUNNING
    study = S.open_for_trials(ws, "interrupted", setup)
    assert study.trials[-1].state == optuna.trial.TrialState.FAIL
    assert study.trials[-1].user_attrs["error"] == "its process ended while it ran"


# ---- spaces ----------------------------------------------------------------------------------------
def test_every_space_field_exists_and_lies_within_its_bounds():
    checked = [m for m in spaces.SPACES if m in SPECS]       # sr / stan / vstan once registered
    assert {"graph_transformer", "itemknn", "sknn"} <= set(checked)
    for model in checked:
        assert spaces.check_space(model) == [], model
        for name in spaces.SPACES[model]:
            assert spaces.owner(model, name) is not None, (model, name)


def test_every_default_can_be_drawn():
    # a space that cannot reach the model's defaults (session-rec's tuned values for the kNNs)
    # could only make a tuned model worse than the untuned one
    for model in (m for m in spaces.SPACES if m in SPECS):
        defaults = {**SPECS[model].resolve().to_dict(), **TrainConfig().to_dict()}
        for name, dist in spaces.SPACES[model].items():
            v = defaults[name]
            if isinstance(dist, spaces.Choice):
                assert v in dist.options, (model, name, v)
            else:
                assert dist.low <= v <= dist.high, (model, name, v)


def test_a_range_outside_the_field_bounds_is_reported(monkeypatch):
    monkeypatch.setitem(spaces.SPACES, "itemknn", {"decay": spaces.FloatRange(0.0, 2.0),
                                                    "nope": spaces.IntRange(1, 2)})
    problems = spaces.check_space("itemknn")
    assert any("decay: must be >= 0 and <= 1 (got 2)" in p for p in problems)
    assert any("'nope' is no field of ItemKNNConfig" in p for p in problems)


def test_fixed_fields_leave_the_space():
    assert set(spaces.space_for("graph_transformer", ["hidden", "lr"])) == {
        "layers", "dropout", "scale", "readout", "pos_emb", "global_k", "switch", "contrastive", "highway",
        "weight_decay", "batch_size", "heads"}
    assert spaces.space_for("pop") == {}


# ---- errors --------------------------------------------------------------------------------------
def test_bad_metric_unknown_model_and_changed_settings_are_errors(tiny_demo_ws, capsys):
    ws = tiny_demo_ws
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "1", "--metric", "hit@5")
    assert rc == 2 and "--metric 'hit@5': expected one of recall@10, ndcg@10, mrr@10, recall@20" in out["errors"][0]
    assert cli(["--workspace", str(ws.root), "tune", "--model", "nosuch", "--trials", "1"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "0")
    assert rc == 2 and "--trials N (N >= 1)" in out["errors"][0]
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "1", "--study", "s2", "--neighbors", "10")
    assert rc == 0
    rc, out = tune(ws, capsys, "--model", "itemknn", "--trials", "2", "--study", "s2", "--neighbors", "20")
    assert rc == 2 and "study 's2' was started with other settings (params: {'neighbors': 10} -> " \
                       "{'neighbors': 20})" in out["errors"][0]
    assert cli(["--workspace", str(ws.root), "tune", "--show", "--study", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_without_optuna_the_command_says_what_to_install(tiny_demo_ws, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "optuna" else real(n, *a))
    assert cli(["--workspace", str(tiny_demo_ws.root), "tune", "--dataset", "demo-tiny", "--model", "pop",
                "--trials", "1"]) == 2
    assert "needs Optuna: pip install" in capsys.readouterr().err


_START = None


def _wait_for_all(barrier) -> None:          # pool initializer: the processes open the database together
    global _START
    _START = barrier


def _open_storage(root: str) -> str:
    from engine.core.workspace import Workspace
    _START.wait(timeout=60)
    try:
        optuna.get_all_study_names(S.storage(Workspace(Path(root))))
        return "ok"
    except Exception as e:                  # the result, not a crash of the pool
        return f"{type(e).__name__}: {e}"


def test_processes_opening_a_new_study_database_at_once_all_succeed(tmp_path):
    # a tuning job creates the database while the app polls it: both create the schema; unserialised,
    # one failed with "table alembic_version already exists" (seen in CI)
    # spawned, not forked: a fork of a pytest worker that earlier tests left with threads can inherit
    # a held lock and hang (a clean-clone CI run hung here); a barrier makes the four open at once
    import multiprocessing as mp

    from engine.core.workspace import Workspace
    ctx = mp.get_context("spawn")
    for attempt in range(2):
        ws = Workspace(tmp_path / f"ws{attempt}")
        ws.tuning_dir.mkdir(parents=True)
        with ctx.Pool(4, initializer=_wait_for_all, initargs=(ctx.Barrier(4),)) as pool:
            assert pool.map(_open_storage, [str(ws.root)] * 4, chunksize=1) == ["ok"] * 4
