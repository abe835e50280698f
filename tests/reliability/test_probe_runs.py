"""Reliability probes of runs (issue 21): an event written at a full disk, trainings killed before
their first checkpoint (a retry loop over the kill time), and rebuilding a dataset a live training
reads."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.errors import StorageError
from engine.runs import read_run
from engine.runs.events import Checkpoint, EventWriter, Resumed, RunStarted, Step, append_event, read_events
from engine.runs.store import list_runs
from engine.train.loop import _prepare_resume, fit
from engine.core.workspace import Workspace
from tests.reliability.helpers import ROOT

TRAIN = ["-q", "train", "--dataset", "demo-tiny", "--hidden", "16", "--heads", "2", "--epochs", "1",
         "--batch-size", "256", "--device", "cpu", "--num-threads", "1"]


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    return tiny_demo_ws


# ---- 11. appends start on a fresh line ---------------------------------------------------------------
def test_11_an_event_after_a_torn_line_is_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    started = json.dumps({"type": "run_started", "run_id": "r", "time": 1.0, "epochs": 3})
    path.write_text(started + "\n" + '{"type": "step", "run_id": "r", "ste')     # torn at ENOSPC
    append_event(path, "r", Resumed(epoch=1, step=7))
    events = read_events(path)
    assert [type(e) for e in events] == [RunStarted, Resumed] and events[1].step == 7
    assert path.read_text().splitlines()[1] == '{"type": "step", "run_id": "r", "ste'   # closed, skipped


def test_11_a_write_cut_short_by_a_full_disk_does_not_glue_the_next_one(tmp_path, monkeypatch):
    import engine.core.atomic as atomic
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path, "r")
    writer.write(RunStarted(epochs=3))
    real_write, fd = os.write, writer._file._fd
    calls = []

    def full_disk(f: int, data) -> int:
        if f == fd and not calls:               # the first append: 10 bytes fit, then ENOSPC
            calls.append(real_write(f, bytes(data[:10])))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(f, data)
    monkeypatch.setattr(atomic.os, "write", full_disk)
    with pytest.raises(StorageError, match="No space left on device"):
        writer.write(Resumed(epoch=1, step=5))
    writer.write(Resumed(epoch=1, step=6))      # the disk has room again
    writer.close()
    events = read_events(path)
    assert [(type(e), getattr(e, "step", None)) for e in events] == [(RunStarted, None), (Resumed, 6)]
    assert len(path.read_text().splitlines()) == 3      # started, the torn 10 bytes, resumed


# ---- 7. a training killed before its first checkpoint -------------------------------------------------
def _killed_at(ws: Workspace, run_id: str, patch: str) -> None:
    """`sessrec train` in a child that SIGKILLs itself where `patch` (engine.train.loop.<name> or
    RunRecorder.<name>) is first called: exactly the moment a kill lands."""
    owner, name = patch.rsplit(".", 1)
    code = (f"import os, signal, sys; import engine.train.loop as L; from engine.train.recorder import "
            f"RunRecorder; setattr({owner}, {name!r}, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)); "
            f"from engine.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "--workspace", str(ws.root), *TRAIN, "--run-id", run_id],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert r.returncode == -signal.SIGKILL, r.stderr


def test_7_killed_before_its_config_the_id_is_free_again(ws):
    _killed_at(ws, "k-early", "L.write_json")
    run = ws.run("k-early")
    assert sorted(p.name for p in run.root.iterdir()) == [".lock"]       # what the probe found
    assert "k-early" not in [r.run_id for r in list_runs(ws)]            # no run: nothing to list
    final = fit(_cfg(), ws, run_id="k-early")                          # was "is taken ... --resume"
    assert final["status"] == "completed" and read_run(ws, "k-early").status == "completed"


def test_7_killed_before_its_first_checkpoint_it_is_listed_and_resumes_from_the_start(ws):
    _killed_at(ws, "k-first", "RunRecorder.checkpoint")
    run = ws.run("k-first")
    logged = [e for e in read_events(run.events) if isinstance(e, Step)]
    assert logged and not run.last.exists()
    assert read_run(ws, "k-first").status == "interrupted"
    final = fit(None, ws, run_id="k-first", resume=True)                # was "no checkpoint"
    assert final["status"] == "completed"
    events = read_events(run.events)
    resumed = [e for e in events if isinstance(e, Resumed)]
    assert len(resumed) == 1 and (resumed[0].epoch, resumed[0].checkpoint_step) == (0, 0)
    assert resumed[0].step == logged[-1].step == resumed[0].redone_steps
    steps = [e.step for e in events if isinstance(e, Step)]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)      # they keep counting
    assert [e.kind for e in events if isinstance(e, Checkpoint)] == ["best", "last"]


def test_7_a_run_that_lost_its_checkpoint_is_not_restarted_silently(ws):
    fit(_cfg(), ws, run_id="k-lost")
    run = ws.run("k-lost")
    run.last.unlink()
    from engine.core.errors import InputError
    with pytest.raises(InputError, match="last.pt: no checkpoint"):
        _prepare_resume(ws, "k-lost", None, None)


def _cfg():
    from tests.conftest import small_cfg
    return small_cfg(epochs=1, batch_size=256, num_threads=1)


def _stage(run) -> str:
    """How far a start has got, as a kill would find it."""
    if not run.root.exists():
        return "nothing"
    if not run.config.exists():
        return "folder"
    if not run.events.exists() or not run.events.stat().st_size:
        return "config"
    if run.last.exists():
        return "checkpoint"
    return "step" if any(isinstance(e, Step) for e in read_events(run.events)) else "events"


def test_7_sigkill_at_every_moment_of_a_start_strands_nothing(ws):
    """The real CLI killed at each stage it reaches in turn (polled every 2 ms): whatever the kill
    leaves is either no run with a free id, or a listed run that resumes."""
    seen: dict[str, str] = {}
    for target in ("folder", "config", "events", "step"):
        run_id = f"k-loop-{target}"
        run = ws.run(run_id)
        proc = subprocess.Popen([sys.executable, "-m", "engine", "--workspace", str(ws.root), *TRAIN,
                                 "--run-id", run_id], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 120
            order = ["nothing", "folder", "config", "events", "step", "checkpoint"]
            while order.index(_stage(run)) < order.index(target) and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            proc.kill()
            proc.wait(30)
        seen[target] = stage = _stage(run)
        if stage in ("nothing", "folder"):          # no run: the id is free
            assert run_id not in [r.run_id for r in list_runs(ws)]
            if stage == "folder":                   # only its lock: a new start with its id works
                assert fit(_cfg(), ws, run_id=run_id)["status"] == "completed"
        else:                                        # a run: listed, and resumable
            st = read_run(ws, run_id)
            assert st.status in ("interrupted", "completed"), (stage, st.status)
            if st.status == "interrupted":
                _prepare_resume(ws, run_id, None, None).lock.release()
    # the kills landed at distinct moments, the later ones in a started run
    assert seen["step"] in ("step", "checkpoint") and seen["events"] in ("events", "step", "checkpoint"), seen


# ---- 8. rebuilding a dataset a live training reads ------------------------------------------------------
def test_8_a_rebuild_under_a_live_training_is_refused_like_a_delete(ws, capsys):
    from engine.cli import main as cli
    from engine.data.manifest import Dataset
    items = ws.dataset("demo-tiny").items
    before = (items.read_bytes(), Dataset.load(ws, "demo-tiny").data)
    # a training that is alive: it holds its run lock (as `sessrec train` does from start to end)
    code = ("import sys, time; from pathlib import Path; from engine.core.locks import RunLock; "
            "RunLock(Path(sys.argv[1]), 'live').acquire(); print('ok', flush=True); time.sleep(120)")
    run = ws.run("live")
    fit(_cfg(), ws, run_id="live")                   # a real run on the dataset (its config names it)
    holder = subprocess.Popen([sys.executable, "-c", code, str(run.lock)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "ok"
        capsys.readouterr()
        for argv, doing in ((["data", "build", "demo-tiny", "--force", "items"], "rebuild stage items"),
                            (["data", "build", "demo-tiny", "--cooc-window", "3"], "rebuild it with new parameters"),
                            (["data", "delete", "demo-tiny", "--yes"], "delete it"),
                            (["demo", "--size", "tiny", "--force"], "regenerate it")):
            assert cli(["--workspace", str(ws.root), *argv]) == 2
            assert capsys.readouterr().err == (
                f"sessrec: error: cannot {doing}: dataset 'demo-tiny' is used by a running training: live "
                f"(process {holder.pid}); stop it first (ctrl+t on the Train screen, or kill the process)\n")
        # nothing was rewritten, and a build with nothing to do is no change
        assert cli(["--workspace", str(ws.root), "-q", "data", "build", "demo-tiny"]) == 0
        assert (items.read_bytes(), Dataset.load(ws, "demo-tiny").data) == before
    finally:
        holder.kill()
        holder.wait()
    assert cli(["--workspace", str(ws.root), "-q", "data", "build", "demo-tiny", "--force", "items"]) == 0
