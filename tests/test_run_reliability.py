"""What a tester found on the run side, each fixed and guarded: taken run ids, the run lock, runs that
never start, disk errors while writing checkpoints, corrupt checkpoints on resume, temp leftovers,
step numbers after a kill, invalid hyperparameters, workspace-relative datasets, item id range."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.inference.recommend import Recommender
from engine.runs import read_events, read_run
from engine.runs.events import Epoch, Resumed, RunFailed, Step
from engine.train.loop import fit
from tests.conftest import small_cfg, stop_after

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    return tiny_demo_ws


cfg = small_cfg


def engine(ws: Workspace, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "--workspace", str(ws.root), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, **kw)


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_taken_run_id_is_a_one_line_error(ws, capsys) -> None:
    fit(cfg(model="pop", model_params={}), ws, run_id="taken")
    assert cli(["--workspace", str(ws.root), "train", "--dataset", "demo-tiny", "--model", "pop",
                "--run-id", "taken"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "run id 'taken' is taken" in line and "--resume taken" in line


@pytest.mark.parametrize("flags, message", [
    (["--hidden", "3", "--heads", "2"], "hidden (3) must be divisible by heads (2)"),
    (["--dropout", "2"], "dropout: must be >= 0 and < 1 (got 2)"),
    (["--readout", "foo"], "readout: expected one of attention, mean, max, last, got 'foo'"),
    (["--model", "sknn", "--hidden", "8"], "model 'sknn' has no parameter 'hidden'"),
    (["--param", "layers=two"], "layers: expected a whole number, got 'two'"),
])
def test_invalid_hyperparameters_are_refused_before_a_run_folder_exists(ws, capsys, flags, message) -> None:
    before = set(ws.run_ids())
    assert cli(["--workspace", str(ws.root), "train", "--dataset", "demo-tiny", *flags]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert set(ws.run_ids()) == before and not any(p.name not in before for p in ws.runs_dir.iterdir())


def test_a_run_that_never_starts_leaves_no_folder(ws, monkeypatch) -> None:
    from engine.train import loop

    def broken(*a, **k):
        raise InputError("no training examples (made up for this test)")
    monkeypatch.setattr(loop, "build_trainer", broken)
    with pytest.raises(InputError, match="made up"):
        fit(cfg(), ws, run_id="never")
    assert not ws.run("never").root.exists()
    monkeypatch.undo()
    assert fit(cfg(epochs=1), ws, run_id="never")["status"] == "completed"      # the id is free


def test_a_second_trainer_of_the_same_run_is_refused_naming_the_process(ws) -> None:
    final = fit(cfg(epochs=1), ws, run_id="locked")
    assert final["status"] == "completed"
    code = ("import sys, time; from pathlib import Path; from engine.runs import RunLock; "
            "RunLock(Path(sys.argv[1]), 'locked').acquire(); print('ok', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(ws.run("locked").lock)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "ok"
        r = engine(ws, "train", "--resume", "locked", "--epochs", "2")
        assert r.returncode == 2
        assert f"run 'locked' is being trained by process {holder.pid}" in one_line(r.stderr)
        events = read_events(ws.run("locked").events)
        assert events[-1].TYPE == "run_finished"         # nothing was appended by the refused resume
    finally:
        holder.kill()
        holder.wait()


def test_disk_full_while_writing_a_checkpoint_is_one_line_and_no_best_epoch_is_recorded(ws) -> None:
    import resource

    def limit() -> None:        # files larger than 60 KB fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
    r = engine(ws, "-q", "train", "--dataset", "demo-tiny", "--hidden", "64", "--epochs", "2", "--device", "cpu",
               "--run-id", "full-disk", preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr)
    assert "could not write checkpoint best.pt" in line and str(ws.run("full-disk").best) in line
    assert "File too large" in line
    events = read_events(ws.run("full-disk").events)
    assert not any(isinstance(e, Epoch) for e in events)           # best.pt was never written
    last = events[-1]
    assert isinstance(last, RunFailed) and last.error_kind == "os_error"
    st = read_run(ws, "full-disk")
    assert st.status == "failed" and st.best_epoch is None and "File too large" in st.error
    assert not ws.run("full-disk").best.exists()
    assert not any(p.name.startswith(".tmp-") for p in ws.run("full-disk").root.iterdir())


def test_a_corrupt_last_checkpoint_does_not_turn_a_completed_run_into_failed(ws, capsys) -> None:
    fit(cfg(epochs=1), ws, run_id="corrupt")
    ws.run("corrupt").last.write_bytes(b"not a checkpoint")
    n = len(read_events(ws.run("corrupt").events))
    assert cli(["--workspace", str(ws.root), "train", "--resume", "corrupt", "--epochs", "2"]) == 2
    assert "not a readable sessrec checkpoint" in one_line(capsys.readouterr().err)
    assert len(read_events(ws.run("corrupt").events)) == n
    assert read_run(ws, "corrupt").status == "completed"


def test_resume_removes_temp_leftovers_of_a_killed_checkpoint_write(ws) -> None:
    fit(cfg(epochs=1), ws, run_id="leftovers")
    run = ws.run("leftovers")
    (run.root / ".tmp-last.pt.abc123").write_bytes(b"half a checkpoint")
    fit(None, ws, run_id="leftovers", resume=True, epochs=2)
    assert not any(p.name.startswith(".tmp-") for p in run.root.iterdir())


def test_after_a_kill_resume_marks_the_restart_and_step_numbers_continue(ws) -> None:
    cmd = [sys.executable, "-m", "engine", "--workspace", str(ws.root), "-q", "train", "--dataset", "demo-tiny",
           "--hidden", "16", "--epochs", "50", "--batch-size", "32", "--device", "cpu", "--run-id", "killed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    run = ws.run("killed")
    try:
        t0 = time.time()
        while True:                     # epoch 1 done (last.pt) and steps of epoch 2 logged
            steps = [e for e in read_events(run.events) if isinstance(e, Step)] if run.events.exists() else []
            if run.last.exists() and any(s.epoch == 2 for s in steps):
                break
            assert time.time() - t0 < 180 and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert read_run(ws, "killed").status == "interrupted"
    logged = max(s.step for s in read_events(run.events) if isinstance(s, Step))
    final = fit(None, ws, run_id="killed", resume=True, epochs=3)
    assert final["status"] in ("completed", "early_stopped")
    events = read_events(run.events)
    resumed = [e for e in events if isinstance(e, Resumed)]
    assert len(resumed) == 1 and resumed[0].step == logged and resumed[0].redone_steps > 0
    steps = [e.step for e in events if isinstance(e, Step)]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)      # never backwards
    after = [e.step for e in events[events.index(resumed[0]):] if isinstance(e, Step)]
    assert after[0] > logged


def test_a_resumed_epoch_reports_the_loss_of_the_whole_epoch(ws) -> None:
    full = fit(cfg(epochs=2, seed=5, batch_size=64), ws)
    stopped = fit(cfg(epochs=2, seed=5, batch_size=64), ws, stop=stop_after(20))     # mid epoch 1
    fit(None, ws, run_id=stopped["run_id"], resume=True)
    want = [e.train_loss for e in read_events(ws.run(full["run_id"]).events) if isinstance(e, Epoch)]
    got = [e.train_loss for e in read_events(ws.run(stopped["run_id"]).events) if isinstance(e, Epoch)]
    assert got == pytest.approx(want, abs=1e-5)


def test_checkpoints_name_their_dataset_relative_to_the_workspace(ws, tmp_path) -> None:
    final = fit(cfg(epochs=1), ws, run_id="portable")
    copy = Workspace.open(tmp_path / "copy")
    shutil.copytree(ws.root, copy.root)
    # the original's dataset goes away: the copy must read its own files
    moved = ws.dataset("demo-tiny").root.with_name("demo-tiny-moved")
    os.rename(ws.dataset("demo-tiny").root, moved)
    try:
        rec = Recommender.load(copy.run(final["run_id"]))
        assert len(rec.recommend(rec.items.raw_ids[:2].tolist(), k=5).items) == 5
        with pytest.raises(InputError, match="not found"):
            Recommender.load(ws.run(final["run_id"]))
    finally:
        os.rename(moved, ws.dataset("demo-tiny").root)


def test_delete_refuses_a_dataset_a_training_uses(ws) -> None:
    run = ws.run("busy")
    run.root.mkdir(parents=True, exist_ok=True)
    run.config.write_text(json.dumps({"run_id": "busy", "train": {"model": "gat", "dataset": "demo-tiny"}}))
    run.events.write_text(json.dumps({"type": "run_started", "dataset": "demo-tiny", "epochs": 3,
                                      "steps_per_epoch": 2}) + "\n")
    code = ("import sys, time; from pathlib import Path; from engine.runs import RunLock; "
            "RunLock(Path(sys.argv[1]), 'busy').acquire(); print('ok', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run.lock)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "ok"
        r = engine(ws, "data", "delete", "demo-tiny", "--yes")
        assert r.returncode == 2
        assert f"used by a running training: busy (process {holder.pid})" in one_line(r.stderr)
        assert ws.dataset("demo-tiny").exists
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(run.root)


def test_an_item_id_beyond_64_bits_is_a_one_line_error(ws, capsys) -> None:
    assert cli(["--workspace", str(ws.root), "recommend", "baseline:pop@demo-tiny", str(2 ** 63)]) == 2
    assert "item id 9223372036854775808 is out of range" in one_line(capsys.readouterr().err)


def test_a_baseline_trains_on_a_dataset_built_without_encodings(tmp_path, capsys) -> None:
    """ModelSpec says which stages a model needs: session-kNN needs no Laplacian PE."""
    other = Workspace.open(tmp_path / "ws")
    assert cli(["--workspace", str(other.root), "-q", "demo", "--size", "tiny", "--no-build"]) == 0
    assert cli(["--workspace", str(other.root), "-q", "data", "build", "demo-tiny", "--upto", "graph"]) == 0
    assert cli(["--workspace", str(other.root), "-q", "train", "--dataset", "demo-tiny", "--model", "sknn",
                "--run-id", "knn"]) == 0
    assert read_run(other, "knn").status == "completed"
    # a GNN with PE still needs them, and says which stage
    assert cli(["--workspace", str(other.root), "train", "--dataset", "demo-tiny", "--model", "gat"]) == 2
    assert "encodings: missing" in one_line(capsys.readouterr().err)
    # without PE (and item features: the metadata stage is not built either) it does not
    assert cli(["--workspace", str(other.root), "-q", "train", "--dataset", "demo-tiny", "--model", "gat",
                "--no-use-pe", "--no-item-features", "--hidden", "16", "--epochs", "1", "--run-id", "nope"]) == 0
