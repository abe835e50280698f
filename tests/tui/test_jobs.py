"""JobManager without a UI: child processes, JSON lines, stderr tail, cancel, records."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import jobs as J
from engine.core.errors import InputError
from engine.core.schema import JobPolicy, JobStatus
from engine.core.workspace import Workspace
from tests.tui.conftest import FAKE_CHILD


def manager(ws: Path, **kw) -> J.JobManager:
    changes: list = []
    events: list = []
    envs: dict[str, list[dict]] = {}       # job id -> the env reports of its child (fake_child.report_env)

    def on_event(job: J.Job, ev: dict) -> None:
        events.append(ev)
        if ev.get("type") == "env":
            envs.setdefault(job.id, []).append(ev)

    m = J.JobManager(ws, engine_cmd=FAKE_CHILD, on_change=changes.append, on_event=on_event,
                     kill_after=kw.pop("kill_after", 2.0), **kw)
    m.changes, m.events, m.envs = changes, events, envs  # type: ignore[attr-defined]
    return m


async def until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_pipeline_job_progress_result_and_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    m = manager(tmp_path)
    job = m.start(J.BuildRequest("demo"))
    assert job.running and m.busy_datasets() == {"demo"}
    await m.wait(job, 30)
    assert job.status == "done", job.error
    assert job.returncode == 0
    assert set(job.stages) >= {"pipeline", "ingest", "encodings"}
    assert job.stages["pipeline"].fraction == 1.0
    assert job.result and job.result["dataset"] == "demo"
    assert any("built" in ln for ln in job.log_lines)
    rec = json.loads((tmp_path / "logs" / f"{job.id}.json").read_text())
    assert rec["status"] == "done" and rec["argv"][-3:] == ["data", "build", "demo"]
    assert "--events" in rec["argv"] and "jsonl" in rec["argv"]
    # a new manager (the app restarted) sees the job in its history, with its log tail
    m2 = manager(tmp_path)
    m2.load_history()
    old = m2.jobs[job.id]
    assert old.status == "done" and old.from_history and any("built" in ln for ln in old.log_lines)


async def test_pipeline_error_event(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "fail")
    m = manager(tmp_path)
    job = await J.run_to_end(m, J.ImportRequest("/x.csv", "rsc15", "x"), timeout=30)
    assert job.status == "failed"
    assert "no valid rows" in (job.error or "")
    assert job.returncode == 2


def _run_events(tmp_path: Path, run_id: str = "r1") -> list:
    from engine.core.workspace import Workspace
    from engine.runs import read_events
    return read_events(Workspace(tmp_path.resolve()).run(run_id).events)


async def test_a_training_writes_its_events_to_its_run_and_its_result_to_stdout(tmp_path: Path,
                                                                               monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    m = manager(tmp_path)
    job = m.start(J.TrainRequest("demo", "graph_transformer", options={"epochs": 2}, params={"hidden": 32}, run_id="r1"))
    await m.wait(job, 30)
    assert job.status == "done"
    # stdout carries only what the events file does not: the final result
    assert [e["type"] for e in m.events if e["type"] != "env"] == ["result"]
    assert job.result["run"]["status"] == "completed"
    types = [e.TYPE for e in _run_events(tmp_path)]
    assert types[0] == "run_started" and types[-1] == "run_finished" and types.count("epoch") == 2
    assert job.argv[-2:] == ["--hidden", "32"]


@pytest.mark.parametrize("scenario,status,needle", [
    ("crash", "failed", "RuntimeError: boom"),
    ("killed", "failed", "SIGKILL"),
    ("oom", "failed", "CUDA out of memory"),
])
async def test_train_failures(tmp_path: Path, monkeypatch, scenario: str, status: str, needle: str) -> None:
    monkeypatch.setenv("FAKE_CHILD", scenario)
    m = manager(tmp_path)
    job = m.start(J.TrainRequest("demo", "gat", run_id="r1"))
    await m.wait(job, 30)
    assert job.status == status
    assert needle in (job.error or ""), job.error
    if scenario == "oom":
        assert job.suggestion and "batch-size" in job.suggestion


async def test_cancel_sigterm_stops_cleanly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    m = manager(tmp_path)
    job = m.start(J.TrainRequest("demo", "gat", run_id="r1"))
    while not any(e.TYPE == "step" for e in _run_events(tmp_path)):
        await asyncio.sleep(0.02)
    assert m.cancel(job)
    assert job.status == "stopping"
    await m.wait(job, 20)
    assert job.status == "stopped"          # the run ended itself with run_finished status stopped
    assert m.events[-1]["type"] == "result" and m.events[-1]["run"]["status"] == "stopped"
    assert _run_events(tmp_path)[-1].TYPE == "run_finished"


async def test_cancel_escalates_to_sigkill(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ignore_term")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.05")
    m = manager(tmp_path, kill_after=0.5)
    job = m.start(J.TrainRequest("demo", "gat", options={"epochs": 50}, run_id="r1"))
    while not any(e.TYPE == "step" for e in _run_events(tmp_path)):
        await asyncio.sleep(0.02)
    t0 = time.monotonic()
    m.cancel(job)
    await m.wait(job, 20)
    assert job.status == "cancelled"
    assert job.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


async def test_missing_engine_is_a_failed_job(tmp_path: Path) -> None:
    m = J.JobManager(tmp_path, engine_cmd=[str(tmp_path / "no-such-python")])
    job = m.start(J.BuildRequest("x"))
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
    assert J.DemoRequest("tiny").args() == ["demo", "--size", "tiny"]
    assert J.BuildRequest("d", True).args() == ["data", "build", "d", "--force"]
    assert J.BuildRequest("d", "graph").args() == ["data", "build", "d", "--force", "graph"]
    assert J.ImportRequest("/p", "rsc15", "n", "/t").args() == ["data", "import", "/p", "--format", "rsc15",
                                                                "--name", "n", "--test-file", "/t"]
    args = J.TrainRequest("demo", "gat", {"batch_size": 64, "device": "cpu", "loss": None},
                          {"use_pe": False, "hidden": 32}, run_id="r").args()
    assert args == ["train", "--dataset", "demo", "--model", "gat", "--run-id", "r", "--batch-size", "64",
                    "--device", "cpu", "--no-use-pe", "--hidden", "32"]
    # each is the flag the CLI generates from the config field: the engine's parser takes them as they are
    from engine.cli import build_parser
    ns = build_parser().parse_args(args)
    assert ns.batch_size == 64 and ns.use_pe is False and ns.hidden == 32 and ns.device == "cpu"
    assert "SIGKILL" in J.describe_exit(-9) and J.describe_exit(2) == "exit status 2"


def test_stage_progress_eta() -> None:
    sp = J.StageProgress("ingest", done=10, total=100, first_time=0.0, first_done=0.0, time=1.0)
    assert sp.fraction == 0.1
    assert sp.eta() == pytest.approx(9.0)
    assert J.StageProgress("x").eta() is None


async def test_second_cancel_kills_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ignore_term")
    m = manager(tmp_path, kill_after=60.0)
    job = m.start(J.TrainRequest("demo", "gat", options={"epochs": 50}, run_id="r1"))
    while not any(e.TYPE == "step" for e in _run_events(tmp_path)):
        await asyncio.sleep(0.02)
    assert m.grace(job) == 60.0
    m.cancel(job)
    await asyncio.sleep(0.2)
    assert job.status == "stopping"          # SIGTERM ignored
    assert m.kill_now(job)
    await m.wait(job, 10)
    assert job.status == "cancelled" and job.returncode == -signal.SIGKILL


# ---- sharing the machine -------------------------------------------------------------------------
def budget_of(ws: Path, job: J.Job) -> str | None:
    path = Workspace(ws).job_threads(job.id)
    return path.read_text().strip() if path.exists() else None


def last_env(m: J.JobManager, job: J.Job) -> dict:
    return (m.envs.get(job.id) or [{}])[-1]  # type: ignore[attr-defined]


async def test_budget_files_follow_jobs_starting_and_ending(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    m = manager(tmp_path, cores=16)
    a = m.start(J.BuildRequest("a"))
    await until(lambda: last_env(m, a).get("budget") == "16")
    env = last_env(m, a)
    assert env["omp"] == env["mkl"] == env["openblas"] == "16" and env["wait_policy"] is None
    assert env["budget_file"] == str(Workspace(tmp_path).job_threads(a.id))
    b = m.start(J.BuildRequest("b"))
    c = m.start(J.BuildRequest("c"))
    assert (a.threads, b.threads, c.threads) == (6, 5, 5)          # the oldest gets the remainder
    assert budget_of(tmp_path, a) == "6"
    await until(lambda: last_env(m, a).get("budget") == "6")      # the running child saw its new share
    await until(lambda: last_env(m, c).get("omp") == "5")          # a new child starts with its share
    assert m.cancel(a)
    await m.wait(a, 20)
    assert budget_of(tmp_path, a) is None                          # an ended job's file is removed
    assert (b.threads, c.threads) == (8, 8) and budget_of(tmp_path, b) == budget_of(tmp_path, c) == "8"
    await until(lambda: last_env(m, b).get("budget") == "8")
    m.cancel_all()
    await m.wait(b, 20)
    await m.wait(c, 20)


async def test_no_thread_budgets_leaves_the_environment_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    m = manager(tmp_path, cores=16, thread_budgets=False)
    job = await J.run_to_end(m, J.BuildRequest("a"), timeout=30)
    assert job.status == "done" and job.threads is None
    env = last_env(m, job)
    assert env["omp"] is None and env["budget"] is None


async def test_queue_policy_runs_one_cpu_job_at_a_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.05")
    m = manager(tmp_path, cores=2, settings=J.JobSettings(policy=JobPolicy.QUEUE))
    a = m.start(J.BuildRequest("a"))
    b = m.start(J.TrainRequest("a", "gat", options={"device": "cpu"}, run_id="r1"))
    assert a.running and b.status == JobStatus.QUEUED and b.pid is None
    assert b.waiting_for == "build a to end" and not b.running and b.active
    assert {j.id for j in m.ordered()[:2]} == {a.id, b.id}          # running and queued jobs first
    assert json.loads(Workspace(tmp_path).job_record(b.id).read_text())["status"] == "queued"
    d = m.start(J.DeleteRequest("x"))        # light: never waits
    assert d.running
    c = m.start(J.BuildRequest("c"))
    assert c.status == JobStatus.QUEUED and m.busy_datasets() >= {"a", "c"}
    assert m.cancel(c)                                            # a queued job is just removed
    assert c.status == JobStatus.CANCELLED and c.id not in m.jobs
    assert not Workspace(tmp_path).job_record(c.id).exists() and not c.log_path.exists()
    await m.wait(a, 30)
    assert a.status == "done" and a.threads == 2                  # alone: all the cores
    await until(lambda: b.running or not b.active)
    assert b.started is not None and a.finished is not None and b.started >= a.finished
    await m.wait(b, 30)
    assert b.status == "done" and last_env(m, b)["omp"] == "2"
    await m.wait(d, 30)


async def test_switching_to_share_starts_the_queued_jobs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "slow")
    m = manager(tmp_path, cores=2, settings=J.JobSettings(policy=JobPolicy.QUEUE))
    a = m.start(J.BuildRequest("a"))
    b = m.start(J.BuildRequest("b"))
    assert b.status == JobStatus.QUEUED
    m.set_settings(J.JobSettings(policy=JobPolicy.SHARE))
    assert b.running and (a.threads, b.threads) == (1, 1)
    assert J.JobSettings.load(Workspace(tmp_path).settings).policy == JobPolicy.SHARE
    m.cancel_all()
    await m.wait(a, 20)
    await m.wait(b, 20)


async def test_gpu_jobs_get_a_gpu_each_or_wait(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.03")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    m = manager(tmp_path, cores=2, gpus=1)
    g1 = m.start(J.TrainRequest("demo", "gat", run_id="r1"))       # device auto
    g2 = m.start(J.TrainRequest("demo", "gat", options={"device": "cuda"}, run_id="r2"))
    cpu = m.start(J.TrainRequest("demo", "gat", options={"device": "cpu"}, run_id="r3"))
    assert g1.running and g1.gpus == [0]
    assert g2.status == JobStatus.QUEUED and "GPU" in (g2.waiting_for or "")
    assert cpu.running and cpu.gpus == []                        # a CPU job does not wait for a GPU
    await m.wait(g1, 30)
    await until(lambda: g2.running or not g2.active)
    assert g2.started >= g1.finished and g2.gpus == [0]
    await m.wait(g2, 30)
    await m.wait(cpu, 30)
    assert [g1.status, g2.status, cpu.status] == ["done"] * 3
    assert last_env(m, g1)["cuda"] == last_env(m, g2)["cuda"] == "0"
    assert last_env(m, cpu)["cuda"] is None


async def test_share_gpus_and_the_apps_visible_devices(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")        # the app itself may use GPUs 5 and 7
    m = manager(tmp_path, cores=2, gpus=2, settings=J.JobSettings(share_gpus=True))
    jobs = [m.start(J.TrainRequest("demo", "gat", run_id=f"r{i}"))
            for i in range(3)]
    assert all(j.running for j in jobs)
    assert [j.gpus for j in jobs] == [[0], [1], [0]]               # a free GPU first, then the least busy
    for j in jobs:
        await m.wait(j, 30)
    assert [last_env(m, j)["cuda"] for j in jobs] == ["5", "7", "5"]


async def test_data_parallel_trainings_get_a_gpu_per_worker(tmp_path: Path, monkeypatch) -> None:
    """`--nproc 2` on the GPU takes two GPUs; GPUs asked for by index are those or a wait; a job
    that needs more GPUs than the machine has says so; the record keeps the GPUs."""
    monkeypatch.setenv("FAKE_CHILD", "ok")
    monkeypatch.setenv("FAKE_CHILD_DELAY", "0.03")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    m = manager(tmp_path, cores=2, gpus=4)
    two = m.start(J.TrainRequest("demo", "gat", workers=2, run_id="r1"))
    assert two.request.gpu_workers() == 2 and two.argv[-2:] == ["--nproc", "2"]
    picked = m.start(J.TrainRequest("demo", "gat", run_id="r2", gpus=[1]))
    wants = m.start(J.TrainRequest("demo", "gat", workers=2, run_id="r3", gpus=[3, 2]))
    big = m.start(J.TrainRequest("demo", "gat", workers=8, run_id="r4"))
    assert two.running and two.gpus == [0, 1]
    assert picked.status == JobStatus.QUEUED and picked.waiting_for == "GPU 1 to be free"
    assert wants.running and wants.gpus == [3, 2]
    assert big.status == JobStatus.QUEUED and big.waiting_for == "8 GPUs (this machine has 4)"
    assert m.gpu_ids(two) == ["2", "3"] and m.gpu_ids(wants) == ["7", "5"]
    await m.wait(two, 30)
    await until(lambda: picked.running or not picked.active)
    assert picked.gpus == [1]
    for j in (picked, wants):
        await m.wait(j, 30)
    assert last_env(m, two)["cuda"] == "2,3" and last_env(m, wants)["cuda"] == "7,5"
    assert json.loads(m.ws.job_record(two.id).read_text())["gpus"] == [0, 1]
    m.cancel_all()


def test_settings_round_trip(tmp_path: Path) -> None:
    path = Workspace(tmp_path).settings
    assert J.JobSettings.load(path) == J.JobSettings()            # no file: the defaults
    path.write_text(json.dumps({"theme": "dark"}))
    J.JobSettings(policy=JobPolicy.QUEUE, share_gpus=True).save(path)
    data = json.loads(path.read_text())
    assert data == {"theme": "dark", "job_policy": "queue", "share_gpus": True}   # other settings kept
    assert J.JobSettings.load(path) == J.JobSettings(JobPolicy.QUEUE, True)
    assert J.JobManager(tmp_path).settings.policy == JobPolicy.QUEUE
    path.write_text(json.dumps({"job_policy": "together"}))
    with pytest.raises(InputError, match="job_policy 'together'"):
        J.JobSettings.load(path)
    m = J.JobManager(tmp_path)                                    # the app still opens, with the defaults
    assert m.settings == J.JobSettings() and "settings.json" in (m.settings_error or "")
    assert "\n" not in m.settings_error


def test_history_liveness_by_start_time(tmp_path: Path) -> None:
    """A detached job is alive when its pid runs a process that started before the job did; the
    same pid with a start long before is a reused pid (the job is interrupted, and not signalled)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        now = time.time()
        for jid, started in (("alive", now), ("reused", now - 86_400)):
            (logs / f"{jid}.json").write_text(json.dumps({
                "id": jid, "kind": "train", "title": jid, "argv": [], "log": str(logs / f"{jid}.log"),
                "status": "running", "pid": proc.pid, "started": started}))
        (logs / "queued.json").write_text(json.dumps({"id": "queued", "kind": "build", "title": "q", "argv": [],
                                                      "status": "queued", "created": now}))
        m = J.JobManager(tmp_path)
        m.load_history()
        assert m.jobs["alive"].status == "detached"
        assert m.jobs["reused"].status == "interrupted"
        assert m.jobs["queued"].status == "interrupted" and "queued" in (m.jobs["queued"].error or "")
        assert not m.cancel(m.jobs["reused"]) and proc.poll() is None   # not ours: never signalled
    finally:
        proc.kill()
        proc.wait()


def test_log_version_counts_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "j.log"
    job = J.Job(id="j", kind="build", title="t", argv=[], log_path=log)
    log.write_text("one\ntw")
    assert job.read_log() and job.log_lines == ["one"] and job.log_version == 1
    assert not job.read_log() and job.log_version == 1             # nothing new: same version
    with open(log, "a") as f:
        f.write("o\nthree\n")
    assert job.read_log() and job.log_lines == ["one", "two", "three"] and job.log_version == 2


def test_job_manager_imports_no_textual() -> None:
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('textual', 'textual_plotext'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import engine.jobs\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    assert out.returncode == 0, out.stderr
