"""Experiment tracking: runs and tuning trials also logged to MLflow (`--tracking mlflow[:URI]`).

    sessrec train ... --tracking mlflow                 # the workspace's local store (WORKSPACE/mlruns)
    sessrec train ... --tracking mlflow:http://host:5000
    settings.json {"tracking": "mlflow"}                # the workspace's default for every run

A tracked run becomes one MLflow run (experiment `sessrec/<dataset>`, run name = the sessrec run id):
its parameters (the TrainConfig, model hyperparameters as `model.<name>`), per-step loss and
learning rate, per-epoch validation metrics (`val.recall_10`: MLflow's names allow no `@`), the
test metrics at the end, and as artifacts `config.json`, the best checkpoint and, when one is made
(`sessrec export --onnx`, a server's ONNX runtime), the ONNX export. Tuning trials carry the study
and trial number as tags. The link is kept in the run folder (`tracking.json`), so a resumed run
continues its MLflow run and a later export finds it.

The local store is SQLite (`WORKSPACE/mlruns/mlflow.db`, artifacts beside it): MLflow 3 keeps its
file store in maintenance mode. Browse it with `mlflow ui --backend-store-uri sqlite:///WORKSPACE/mlruns/mlflow.db`.

Tracking never fails a run: the first error (mlflow not installed, a server down, a full disk) is
one warning, and the run goes on untracked. MLflow is an optional extra (`pip install
sessrec[mlflow]`, which installs mlflow-skinny).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

from engine.core.atomic import write_json
from engine.core.config import TrackingConfig
from engine.core.errors import InputError
from engine.core.workspace import RunDir, Workspace

Warn = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"sessrec: {msg}", file=sys.stderr)


def tracking_uri(ws: Workspace, spec: str | None) -> str | None:
    """The MLflow tracking URI for `spec` (`mlflow`, `mlflow:URI`, `none`, or empty: the workspace's
    settings.json 'tracking', else none); None when not tracking."""
    if not spec:
        try:
            spec = json.loads(ws.settings.read_text()).get("tracking") or ""
        except (OSError, ValueError, AttributeError):
            spec = ""
    spec = TrackingConfig(tracking=spec).tracking
    if not spec or spec == "none":
        return None
    if spec == "mlflow":
        return f"sqlite:///{ws.mlflow_store / 'mlflow.db'}"
    return spec[len("mlflow:"):]


class Tracker:
    """Not tracking: every call does nothing (what a run gets without --tracking)."""

    active = False

    def started(self, run: RunDir, event: dict) -> None: ...
    def step(self, step: int, fields: dict) -> None: ...
    def epoch(self, fields: dict) -> None: ...
    def finished(self, run: RunDir, event: dict) -> None: ...
    def failed(self, event: dict) -> None: ...


class MlflowTracker(Tracker):
    """One sessrec run -> one MLflow run, through MlflowClient (explicit run ids: no global state)."""

    active = True

    def __init__(self, ws: Workspace, uri: str, tags: dict[str, str] | None = None, warn: Warn = _stderr) -> None:
        self.ws, self.uri, self.tags, self.warn = ws, uri, dict(tags or {}), warn
        self.client: Any = None
        self.mlflow_run: str | None = None
        self._broken = False

    # every call is guarded: tracking never fails a run
    def _do(self, what: str, fn: Callable[[], Any]) -> Any:
        if self._broken:
            return None
        try:
            return fn()
        except Exception as e:                  # ImportError, MlflowException, OSError, ...
            self._broken = True
            self.warn(f"MLflow tracking off for this run ({what}: {type(e).__name__}: {str(e)[:300]}); "
                      f"the run goes on")
            return None

    def _client(self):
        if self.client is None:
            from mlflow.tracking import MlflowClient
            if self.uri.startswith("sqlite:///"):
                os.makedirs(os.path.dirname(self.uri[len("sqlite:///"):]), exist_ok=True)
            self.client = MlflowClient(tracking_uri=self.uri)
        return self.client

    def _experiment(self, name: str) -> str:
        c = self._client()
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):           # artifacts beside the local database
            location = (self.ws.mlflow_store / "artifacts" / name.replace("/", "_")).as_uri()
        return c.create_experiment(name, artifact_location=location)

    def started(self, run: RunDir, event: dict) -> None:
        def go() -> None:
            from mlflow.entities import Param
            c = self._client()
            link = _read_link(run)
            if link and link.get("uri") == self.uri:          # a resumed run continues its MLflow run
                self.mlflow_run = link["run_id"]
                c.update_run(self.mlflow_run, status="RUNNING")
                return
            cfg = event.get("config") or {}
            exp = self._experiment(f"sessrec/{event.get('dataset') or cfg.get('dataset')}")
            tags = {"sessrec.run_id": run.run_id, "sessrec.model": str(event.get("model")),
                    "sessrec.device": str(event.get("device")), **self.tags}
            r = c.create_run(exp, run_name=run.run_id, tags=tags)
            self.mlflow_run = r.info.run_id
            write_json(run.tracking, {"uri": self.uri, "run_id": self.mlflow_run, "experiment": exp},
                       "tracking link")
            params = {k: v for k, v in cfg.items() if k != "model_params"}
            params.update({f"model.{k}": v for k, v in (cfg.get("model_params") or {}).items()})
            params.update({"n_items": event.get("n_items"), "n_params": event.get("n_params")})
            if event.get("warm_start"):
                params["warm_start.from_run"] = event["warm_start"].get("from_run")
            c.log_batch(self.mlflow_run, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        self._do("starting the run", go)

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, step) for k, v in values.items() if isinstance(v, (int, float))]
        if ms and self.mlflow_run:
            self._client().log_batch(self.mlflow_run, metrics=ms)

    def step(self, step: int, fields: dict) -> None:
        self._do("logging a step", lambda: self._metrics(
            {"train.loss": fields.get("loss"), "train.lr": fields.get("lr"),
             "train.examples_per_s": fields.get("examples_per_s")}, step))

    def epoch(self, fields: dict) -> None:
        val = (fields.get("val") or {}).get("metrics") or {}
        values = {f"val.{metric_key(k)}": v for k, v in val.items()}
        values.update({"train.epoch_loss": fields.get("train_loss"), "epoch_seconds": fields.get("epoch_seconds")})
        self._do("logging an epoch", lambda: self._metrics(values, int(fields.get("epoch") or 0)))

    def finished(self, run: RunDir, event: dict) -> None:
        def go() -> None:
            c = self._client()
            values = {}
            for proto, res in (event.get("test") or {}).items():
                values.update({f"test.{proto}.{metric_key(k)}": v for k, v in (res.get("metrics") or {}).items()})
            for k, v in (event.get("best_val") or {}).items():
                values[f"best_val.{metric_key(k)}"] = v
            self._metrics(values, int(event.get("best_epoch") or 0))
            for path in (run.config, run.best if run.best.exists() else run.last):
                if path.exists():
                    c.log_artifact(self.mlflow_run, str(path))
            status = event.get("status")
            c.set_terminated(self.mlflow_run, "KILLED" if status == "stopped" else "FINISHED")
        if self.mlflow_run:
            self._do("finishing the run", go)

    def failed(self, event: dict) -> None:
        if self.mlflow_run:
            self._do("recording the failure", lambda: self._client().set_terminated(self.mlflow_run, "FAILED"))


def metric_key(name: str) -> str:
    """`recall@10` -> `recall_10` (MLflow metric names: letters, digits, `_ - . / :` and spaces)."""
    return name.replace("@", "_")


def tracker_for(ws: Workspace, spec: str | None, tags: dict[str, str] | None = None, warn: Warn = _stderr) -> Tracker:
    """The tracker of a new or resumed run (a bad spec is an InputError, before the run starts)."""
    try:
        uri = tracking_uri(ws, spec)
    except InputError as e:
        raise InputError(f"--tracking: {e}") from None
    return MlflowTracker(ws, uri, tags, warn) if uri else Tracker()


def _read_link(run: RunDir) -> dict | None:
    try:
        return json.loads((run.tracking).read_text())
    except (OSError, ValueError):
        return None


def log_run_artifact(run: RunDir, path, subdir: str | None = None, warn: Warn = _stderr) -> bool:
    """Attach `path` (an export) to the run's MLflow run, if the run is tracked; never raises."""
    link = _read_link(run)
    if not link:
        return False
    try:
        from mlflow.tracking import MlflowClient
        MlflowClient(tracking_uri=link["uri"]).log_artifact(link["run_id"], str(path), subdir)
        return True
    except Exception as e:
        warn(f"MLflow: could not attach {path} to run {run.run_id} ({type(e).__name__}: {str(e)[:200]})")
        return False
