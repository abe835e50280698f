"""JobManager without a UI: child processes, JSON lines, stderr tail, cancel, records."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from tests.tui.conftest import FAKE_CHILD
from tui import jobs as J


def manager(ws: Path, **kw) -> J.JobManager:
    changes: list = []
    events: list = []
    m = J.JobManager(ws, engine_cmd=FAKE_CHILD, on_change=changes.append,
                     on_event=lambda job, ev: events.append(ev), kill_after=kw.pop("kill_after", 2.0), **kw)
    m.changes, m.events = changes, events  # type: ignore[attr-defined]
    return m


async def test_pipeline_job_progress_result_and_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    m = manager(tmp_path)
    job = m.start("build", J.build_args("demo"), "build demo", dataset="demo")
    assert job.running and m.busy_datasets() == {"demo"}
    await m.wait(job, 30)
    assert job.status == "done", job.error
    assert job.returncode == 0
    assert set(job.stages) >= {"pipeline", "ingest", "encodings"}
    assert job.stages["pipeline"].fraction == 1.0
    assert job.result and job.result["dataset"] == "demo"
    assert any("built" in ln for ln in job.stderr_tail)
    rec = json.loads((tmp_path / "logs" / f"{job.id}.json").read_text())
    assert rec["status"] == "done" and rec["argv"][-3:] == ["data", "build", "demo"]
    assert "--events" in rec["argv"] and "jsonl" in rec["argv"]
    # a new manager (the app restarted) sees the job in its history, with its log tail
    m2 = manager(tmp_path)
    m2.load_history()
    old = m2.jobs[job.id]
    assert old.status == "done" and old.from_history and any("built" in ln for ln in old.stderr_tail)


async def test_pipeline_error_event(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "fail")
    m = manager(tmp_path)
    job = await J.run_to_end(m, "import", J.import_args("/x.csv", "rsc15", "x"), "import x", timeout=30)
    assert job.status == "failed"
    assert "no valid rows" in (job.error or "")
    assert job.returncode == 2


async def test_train_events_are_forwarded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    m = manager(tmp_path)
    job = m.start("train", J.train_args("demo", "graph_transformer", "r1", {"epochs": 2}, {"hidden": 32}),
                  "train", run_id="r1")
    await m.wait(job, 30)
    assert job.status == "done"
    types = [e["type"] for e in m.events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("epoch") == 2
    assert job.argv[-2:] == ["--param", "hidden=32"]
    assert (tmp_path / "runs" / "r1" / "events.jsonl").exists()


@pytest.mark.parametrize("scenario,status,needle", [
    ("crash", "failed", "RuntimeError: boom"),
    ("killed", "failed", "SIGKILL"),
    ("oom", "failed", "CUDA out of memory"),
])
async def test_train_failures(tmp_path: Path, monkeypatch, scenario: str, status: str, needle: str) -> None:
    monkeypatch.setenv("FAKE_CHILD", scenario)
    m = manager(tmp_path)
    job = m.start("train", J.train_args("demo", "gat", "r1"), "train", run_id="r1")
    await m.wait(job, 30)
    assert job.status == status
    assert needle in (job.error or ""), job.error
    if scenario == "oom":
        assert job.suggestion and "batch-size" in job.suggestion


async def test_cancel_sigterm_stops_cleanly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    m = manager(tmp_path)
    job = m.start("train", J.train_args("demo", "gat", "r1"), "train", run_id="r1")
    while not any(e["type"] == "step" for e in m.events):
        await asyncio.sleep(0.02)
    assert m.cancel(job)
    assert job.status == "stopping"
    await m.wait(job, 20)
    assert job.status == "stopped"          # the run ended itself with run_finished status stopped
    assert m.events[-1]["type"] == "run_finished" and m.events[-1]["status"] == "stopped"


async def test_cancel_escalates_to_sigkill(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ignore_term")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.05")
    m = manager(tmp_path, kill_after=0.5)
    job = m.start("train", J.train_args("demo", "gat", "r1", {"epochs": 50}), "train", run_id="r1")
    while not any(e["type"] == "step" for e in m.events):
        await asyncio.sleep(0.02)
    t0 = time.monotonic()
    m.cancel(job)
    await m.wait(job, 20)
    assert job.status == "cancelled"
    assert job.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


async def test_missing_engine_is_a_failed_job(tmp_path: Path) -> None:
    m = J.JobManager(tmp_path, engine_cmd=[str(tmp_path / "no-such-python")])
    job = m.start("build", J.build_args("x"), "build x")
    await m.wait(job, 5)
    assert job.status == "failed" and "could not start" in (job.error or "")


def test_history_marks_dead_running_jobs_interrupted(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "j1.json").write_text(json.dumps({"id": "j1", "kind": "train", "title": "t", "argv": [],
                                              "log": str(logs / "j1.log"), "status": "running",
                                              "pid": 999_999_99, "started": 1.0}))
    m = J.JobManager(tmp_path)
    m.load_history()
    assert m.jobs["j1"].status == "interrupted"


def test_args_builders() -> None:
    assert J.demo_args("tiny") == ["demo", "--size", "tiny"]
    assert J.build_args("d", True) == ["data", "build", "d", "--force"]
    assert J.build_args("d", "graph") == ["data", "build", "d", "--force", "graph"]
    assert J.import_args("/p", "rsc15", "n", "/t") == ["data", "import", "/p", "--format", "rsc15", "--name", "n",
                                                       "--test-file", "/t"]
    args = J.train_args("demo", "m", "r", {"batch_size": 64, "device": "cpu", "loss": None}, {"use_pe": False})
    assert args == ["train", "--dataset", "demo", "--model", "m", "--run-id", "r", "--batch-size", "64",
                    "--device", "cpu", "--param", "use_pe=false"]
    assert "SIGKILL" in J.describe_exit(-9) and J.describe_exit(2) == "exit status 2"


def test_stage_progress_eta() -> None:
    sp = J.StageProgress("ingest", done=10, total=100, first_time=0.0, first_done=0.0, time=1.0)
    assert sp.fraction == 0.1
    assert sp.eta() == pytest.approx(9.0)
    assert J.StageProgress("x").eta() is None


async def test_second_cancel_kills_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ignore_term")
    m = manager(tmp_path, kill_after=60.0)
    job = m.start("train", J.train_args("demo", "gat", "r1", {"epochs": 50}), "train", run_id="r1")
    while not any(e["type"] == "step" for e in m.events):
        await asyncio.sleep(0.02)
    assert m.grace(job) == 60.0
    m.cancel(job)
    await asyncio.sleep(0.2)
    assert job.status == "stopping"          # SIGTERM ignored
    assert m.kill_now(job)
    await m.wait(job, 10)
    assert job.status == "cancelled" and job.returncode == -signal.SIGKILL
