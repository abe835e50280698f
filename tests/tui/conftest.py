"""Fixtures of the app's tests: a built tiny demo workspace (made once, copied per test), fake runs,
job records with fixed times, a fixed device, and the fake engine child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE_CHILD = [sys.executable, str(HERE / "fake_child.py")]

DEVICE = {"cuda_available": False, "torch": "2.x", "cuda_version": None}


def fake_device() -> dict:
    return dict(DEVICE)


def make_app(ws: Path, child: bool = True, **kw):
    """The app on `ws`, with the fake engine child and a fixed device (no GPU) by default."""
    from tui.app import SessrecApp
    kw.setdefault("engine_cmd", FAKE_CHILD if child else None)
    kw.setdefault("device_loader", fake_device)
    kw.setdefault("kill_after", 3.0)
    kw.setdefault("kill_after_train", 3.0)
    return SessrecApp(ws, **kw)


def _build_tiny(ws_root: Path) -> None:
    """The tiny demo, built in-process; stage times fixed so screenshots do not move."""
    from engine.core.config import DataConfig
    from engine.core.workspace import Workspace
    from engine.data.demo import generate_demo
    from engine.data.manifest import Dataset
    from engine.data.pipeline import build
    ws = Workspace.open(ws_root)
    name = "demo-tiny"
    paths = ws.dataset(name)
    generate_demo(paths.demo_events, paths.demo_truth, size="tiny", seed=0)
    ds = Dataset.create(ws, name, paths.demo_events, DataConfig(format="retailrocket"),
                        demo={"size": "tiny", "seed": 0})
    build(ds)
    ds = Dataset.load(ws, name)
    for rec in ds.data.get("stages", {}).values():
        rec["seconds"] = 0.1
        rec["finished_at"] = "2025-01-01T00:00:00+0000"
    ds.save()


def _fake_run(ws_root: Path, run_id: str, model: str, epochs: int, scenario: str = "ok") -> None:
    env = dict(os.environ, FAKE_CHILD=scenario, FAKE_CHILD_DELAY="0")
    subprocess.run([*FAKE_CHILD, "--workspace", str(ws_root), "--events", "jsonl", "train", "--dataset",
                    "demo-tiny", "--model", model, "--run-id", run_id, "--epochs", str(epochs)],
                   env=env, check=False, capture_output=True, timeout=60)
    # fixed creation times, so the default sort (newest first) is stable
    cfg_p = ws_root / "runs" / run_id / "config.json"
    cfg = json.loads(cfg_p.read_text())
    cfg["created"] = {"run-a": "2025-01-01T10:00:00", "run-b": "2025-01-01T11:00:00",
                      "run-c": "2025-01-01T12:00:00"}.get(run_id, "2025-01-01T09:00:00")
    cfg_p.write_text(json.dumps(cfg))


def _job_records(ws_root: Path) -> None:
    logs = ws_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    recs = [
        {"id": "20250101-100000-demo-demo-tiny", "kind": "demo", "title": "demo tiny -> demo-tiny",
         "argv": ["python", "-m", "engine", "demo", "--size", "tiny"], "dataset": "demo-tiny", "run_id": None,
         "status": "done", "pid": 1, "started": 1735725600.0, "finished": 1735725603.5, "returncode": 0,
         "error": None, "suggestion": None, "detached": False},
        {"id": "20250101-110000-train-run-b", "kind": "train", "title": "train sknn on demo-tiny",
         "argv": ["python", "-m", "engine", "train"], "dataset": None, "run_id": "run-b", "status": "failed",
         "pid": 2, "started": 1735729200.0, "finished": 1735729260.0, "returncode": 3,
         "error": "CUDA out of memory at batch size 512", "suggestion": "retry with --batch-size 256",
         "detached": False},
    ]
    for rec in recs:
        rec["log"] = str(logs / f"{rec['id']}.log")
        (logs / f"{rec['id']}.json").write_text(json.dumps(rec))
        (logs / f"{rec['id']}.log").write_text(f"{rec['title']}: line one\nline two\n")


def copy_workspace(src: Path, dst: Path) -> Path:
    """Copy a workspace and point its demo datasets at their own copied source files (the
    manifest stores absolute source paths)."""
    shutil.copytree(src, dst)
    for manifest in dst.glob("datasets/*/manifest.json"):
        data = json.loads(manifest.read_text())
        path = data.get("source", {}).get("path") or ""
        if path.startswith(str(src)):
            data["source"]["path"] = str(dst) + path[len(str(src)):]
            manifest.write_text(json.dumps(data, indent=1))
    for rec_p in dst.glob("logs/*.json"):
        rec = json.loads(rec_p.read_text())
        if str(rec.get("log", "")).startswith(str(src)):
            rec["log"] = str(dst) + rec["log"][len(str(src)):]
            rec_p.write_text(json.dumps(rec))
    return dst


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """A workspace with the tiny demo built (made once per test session)."""
    root = tmp_path_factory.mktemp("tiny") / "ws"
    _build_tiny(root)
    return root


@pytest.fixture(scope="session")
def full_template(tiny_template: Path, tmp_path_factory) -> Path:
    """The tiny demo plus three fake runs and two job records (fixed data for screenshots)."""
    root = copy_workspace(tiny_template, tmp_path_factory.mktemp("full") / "ws")
    _fake_run(root, "run-a", "graph_transformer", 4)
    _fake_run(root, "run-b", "graphsage", 3)
    _fake_run(root, "run-c", "graph_transformer", 2, scenario="oom")
    _job_records(root)
    return root


@pytest.fixture
def tiny_ws(tiny_template: Path, tmp_path: Path) -> Path:
    return copy_workspace(tiny_template, tmp_path / "ws")


@pytest.fixture
def full_ws(full_template: Path, tmp_path: Path) -> Path:
    return copy_workspace(full_template, tmp_path / "ws")


@pytest.fixture
def empty_ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"

