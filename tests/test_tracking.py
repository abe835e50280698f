"""MLflow tracking against a local store: a run's parameters, per-epoch metrics and artifacts, a
resumed run continuing its MLflow run, a tuning trial's tags, the workspace's default, and a
tracking store that fails: a warning, and the run goes on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from engine.cli import main as cli  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.tracking import tracking_uri  # noqa: E402
from engine.train.loop import fit  # noqa: E402
from tests.conftest import small_cfg, stop_after  # noqa: E402


def link(ws, run_id: str) -> tuple[MlflowClient, str]:
    d = json.loads(ws.run(run_id).tracking.read_text())
    return MlflowClient(tracking_uri=d["uri"]), d["run_id"]


def test_the_spec_and_the_workspace_default(tmp_path):
    from engine.core.workspace import Workspace
    ws = Workspace.open(tmp_path)
    assert tracking_uri(ws, None) is None and tracking_uri(ws, "none") is None
    assert tracking_uri(ws, "mlflow") == f"sqlite:///{ws.root}/mlruns/mlflow.db"
    assert tracking_uri(ws, "mlflow:http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    ws.root.mkdir(exist_ok=True)
    ws.settings.write_text(json.dumps({"tracking": "mlflow:sqlite:////x/y.db"}))
    assert tracking_uri(ws, None) == "sqlite:////x/y.db" and tracking_uri(ws, "none") is None
    with pytest.raises(InputError, match="expected mlflow, mlflow:URI or none"):
        tracking_uri(ws, "wandb")


def test_a_tracked_run_in_the_local_store(tiny_demo_ws):
    ws = tiny_demo_ws
    final = fit(small_cfg(epochs=2), ws, run_id="tracked", tracking="mlflow")
    c, rid = link(ws, "tracked")
    r = c.get_run(rid)
    assert r.info.status == "FINISHED" and r.info.run_name == "tracked"
    assert c.get_experiment(r.info.experiment_id).name == "sessrec/demo-tiny"
    p = r.data.params
    assert (p["epochs"], p["model"], p["model.hidden"], p["batch_size"]) == ("2", "graph_transformer", "16", "256")
    hist = c.get_metric_history(rid, "val.recall_10")
    assert [m.step for m in hist] == [1, 2]
    epochs = [e for e in map(json.loads, ws.run("tracked").events.read_text().splitlines()) if e["type"] == "epoch"]
    assert [m.value for m in hist] == pytest.approx([e["val"]["metrics"]["recall@10"] for e in epochs])
    assert r.data.metrics["test.prefixes.recall_20"] == pytest.approx(final["test"]["prefixes"]["metrics"]["recall@20"])
    assert sorted(a.path for a in c.list_artifacts(rid)) == ["best.pt", "config.json"]
    assert r.data.tags["sessrec.run_id"] == "tracked"


def test_a_resumed_run_continues_its_mlflow_run(tiny_demo_ws):
    ws = tiny_demo_ws
    fit(small_cfg(epochs=2), ws, run_id="tracked-resume", tracking="mlflow", stop=stop_after(3))
    c, rid = link(ws, "tracked-resume")
    assert c.get_run(rid).info.status == "KILLED"
    fit(None, ws, run_id="tracked-resume", resume=True, tracking="mlflow")
    c2, rid2 = link(ws, "tracked-resume")
    assert rid2 == rid and c.get_run(rid).info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(rid, "val.recall_10")][-1] == 2


def test_a_broken_store_is_one_warning_and_the_run_goes_on(tiny_demo_ws, tmp_path):
    ws = tiny_demo_ws
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    said = []
    final = fit(small_cfg(epochs=1), ws, run_id="untracked", log=said.append,
                tracking=f"mlflow:sqlite:///{blocker}/sub/mlflow.db")
    assert final["status"] == "completed" and final["test"]
    warnings = [m for m in said if "MLflow tracking off" in m]
    assert len(warnings) == 1 and "the run goes on" in warnings[0]
    assert not ws.run("untracked").tracking.exists()


def test_tuning_trials_are_tracked_with_their_study(tiny_demo_ws):
    ws = tiny_demo_ws
    assert cli(["--workspace", str(ws.root), "-q", "tune", "--dataset", "demo-tiny", "--model", "pop",
                "--trials", "1", "--study", "tracked-study", "--tracking", "mlflow"]) == 0
    from engine.tune import study as S
    run_id = S.load(ws, "tracked-study").trials[0].user_attrs["run_id"]
    c, rid = link(ws, run_id)
    tags = c.get_run(rid).data.tags
    assert (tags["sessrec.study"], tags["sessrec.trial"]) == ("tracked-study", "0")


def test_a_data_parallel_run_is_tracked_once_by_rank_0(tiny_demo_ws):
    from tests.test_distributed import FLAGS, sessrec
    ws = tiny_demo_ws
    r = sessrec(ws, "train", *FLAGS, "--epochs", "2", "--batch-size", "256", "--run-id", "tracked-dp",
                "--nproc", "2", "--tracking", "mlflow")
    assert r.returncode == 0, r.stderr
    assert "MLflow" not in r.stderr                       # no tracking warning from any worker
    c, rid = link(ws, "tracked-dp")
    run = c.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.params["batch_size"] == "256"
    # one MLflow run for the two workers, with each epoch logged once
    exp = run.info.experiment_id
    assert [x.info.run_name for x in c.search_runs([exp])].count("tracked-dp") == 1
    assert [m.step for m in c.get_metric_history(rid, "val.recall_10")] == [1, 2]
    assert sorted(a.path for a in c.list_artifacts(rid)) == ["best.pt", "config.json"]


def test_a_bad_tracking_spec_refuses_a_data_parallel_run_before_it_starts(tiny_demo_ws, capsys):
    ws = tiny_demo_ws
    assert cli(["--workspace", str(ws.root), "train", "--dataset", "demo-tiny", "--model", "graph_transformer",
                "--run-id", "dp-bad-tracking", "--nproc", "2", "--tracking", "wandb"]) == 2
    assert "expected mlflow, mlflow:URI or none" in capsys.readouterr().err
    assert not ws.run("dp-bad-tracking").root.exists()
