"""Runs read back through the one reducer: typed events, the tolerant tail, RunState, the store and
its liveness rule (the run lock), and unreadable runs that never hide the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.core.workspace import Workspace
from engine.runs import EventTail, RunLock, RunState, RunStore, lock_holder, new_run_id, parse_event, read_run
from engine.runs.events import Epoch, RunFinished, RunStarted, Step


def _events() -> list[dict]:
    evs = [{"type": "run_started", "run_id": "r", "model": "m", "dataset": "d", "device": "cpu",
            "steps_per_epoch": 4, "epochs": 2, "pid": 0, "n_params": 10, "time": 1.0}]
    step = 0
    for e in (1, 2):
        for k in range(1, 5):
            step += 1
            evs.append({"type": "step", "epoch": e, "step": step, "epoch_step": k, "steps_per_epoch": 4,
                        "loss": 1.0 / step, "examples_per_s": 100.0, "eta_s": 8 - step})
        evs.append({"type": "epoch", "epoch": e, "epoch_seconds": 2.0, "best_epoch": 1, "best_value": 0.3,
                    "improved": e == 1, "val": {"metrics": {"recall@10": 0.3 if e == 1 else 0.25,
                                                            "ndcg@10": 0.2}}})
    evs.append({"type": "run_finished", "status": "completed", "best_epoch": 1,
                "best_val": {"recall@10": 0.3}, "test": {"last": {"metrics": {"recall@10": 0.28}}}})
    return evs


def _write_run(ws: Workspace, run_id: str, events: list[dict] | None, config: object | None = None,
               raw: bytes = b"") -> Path:
    run = ws.run(run_id)
    run.root.mkdir(parents=True)
    cfg = config if config is not None else {"run_id": run_id, "created": "2025-01-01T00:00:00", "kind": "gnn",
                                             "train": {"model": "m", "dataset": "d", "epochs": 2}}
    run.config.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    with open(run.events, "wb") as f:
        for ev in events or []:
            f.write(json.dumps(ev).encode() + b"\n")
        f.write(raw)
    return run.root


def test_state_folds_events() -> None:
    st = RunState("r")
    evs = [parse_event(e) for e in _events()]
    st.apply_all(evs[:6])
    frac, desc = st.progress()
    assert st.status == "running" and frac == pytest.approx(4 / 8) and "epoch 1/2" in desc
    st.apply_all(evs[6:])
    assert st.status == "completed" and st.finished and st.epochs_run == 2
    assert st.losses[-1] == pytest.approx(1 / 8) and len(st.steps) == 8
    assert st.epoch_x == [1, 2] and st.val_recall == [0.3, 0.25] and st.best_epoch == 1
    assert st.test["last"]["recall@10"] == 0.28 and st.metric("test_last") == 0.28
    assert st.metric("val") == 0.3


def test_failure_and_fail() -> None:
    st = RunState("r")
    st.apply_all([parse_event({"type": "run_started", "steps_per_epoch": 1, "epochs": 1}),
                  parse_event({"type": "run_failed", "error": "CUDA out of memory", "error_kind": "cuda_oom",
                               "suggestion": "smaller"})])
    assert st.status == "failed" and st.error_kind == "cuda_oom" and st.suggestion == "smaller"
    st2 = RunState("x")
    st2.apply(parse_event({"type": "run_started", "steps_per_epoch": 1, "epochs": 1}))
    st2.fail("killed by SIGKILL")
    assert st2.status == "failed" and "SIGKILL" in st2.error


def test_parse_event_refuses_wrong_types_and_unknown_types() -> None:
    assert isinstance(parse_event({"type": "step", "step": 3, "loss": 0.5}), Step)
    assert parse_event({"type": "step", "step": "three"}) is None
    assert parse_event({"type": "epoch", "improved": 1}) is None          # a bool field
    assert parse_event({"type": "nope"}) is None and parse_event([1, 2]) is None
    ev = parse_event({"type": "run_finished", "status": "completed", "future_field": 1})
    assert isinstance(ev, RunFinished) and ev.status == "completed"       # unknown fields ignored


def test_tail_reads_appended_complete_lines_and_skips_bad_ones(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    tail = EventTail(p)
    assert tail.poll() == []
    p.write_bytes(b'{"type": "run_started"}\n{"type": "step", "step"')     # a torn last line
    assert [e.TYPE for e in tail.poll()] == ["run_started"]
    with open(p, "ab") as f:
        f.write(b': 1}\nnot json\n\xff\xfe{"type": "step"}\n[1, 2]\n{"type": "epoch", "epoch": 1}\n')
    assert [e.TYPE for e in tail.poll()] == ["step", "epoch"]
    assert tail.skipped == 3


def test_store_lists_unreadable_runs_and_keeps_the_others(tmp_path: Path, capsys) -> None:
    ws = Workspace.open(tmp_path / "ws")
    _write_run(ws, "good", _events())
    _write_run(ws, "bytes", _events(), raw=b'\xff\xfe not utf-8\n[1, 2, 3]\n"a string"\n')
    _write_run(ws, "badcfg", _events(), config="{not json")
    _write_run(ws, "torn", _events(), raw=b'{"type": "step", "ep')        # half-written last line
    states = {s.run_id: s for s in RunStore(ws).refresh()}
    assert set(states) == {"good", "bytes", "badcfg", "torn"}
    assert states["good"].status == "completed" and states["good"].skipped_lines == 0
    assert states["bytes"].status == "completed" and states["bytes"].skipped_lines == 3
    assert states["badcfg"].status == "unreadable" and "config.json" in states["badcfg"].error
    assert states["torn"].status == "completed"          # its status comes from what was read
    # the CLI lists all four, the broken config with its reason, and does not crash
    assert cli(["--workspace", str(ws.root), "--events", "jsonl", "runs"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_id = {r["run_id"]: r for r in res["runs"]}
    assert by_id["badcfg"]["status"] == "unreadable" and by_id["bytes"]["skipped_lines"] == 3
    assert cli(["--workspace", str(ws.root), "runs"]) == 0
    text = capsys.readouterr().out
    assert "badcfg" in text and "unreadable" in text and "3 unreadable line" in text


def test_liveness_is_the_run_lock(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    started = _events()[:3]
    _write_run(ws, "r", started)
    store = RunStore(ws)
    assert store.get("r").status == "interrupted"          # no process holds the lock
    # a live process holds it: the run is running (whatever pid its events name)
    code = ("import sys, time; from engine.runs import RunLock; from pathlib import Path; "
            "lock = RunLock(Path(sys.argv[1]), 'r').acquire(); print('locked', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ws.run("r").lock)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert lock_holder(ws.run("r").lock) == proc.pid
        assert store.get("r").status == "running"
        with pytest.raises(Exception, match=f"being trained by process {proc.pid}"):
            RunLock(ws.run("r").lock, "r").acquire(timeout=0.2)
    finally:
        proc.kill()
        proc.wait()
    assert lock_holder(ws.run("r").lock) is None            # SIGKILL released it
    assert store.get("r").status == "interrupted" and store.get("r").error


def test_store_reads_each_file_once_then_only_what_is_appended(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    _write_run(ws, "r", _events()[:3])
    store = RunStore(ws)
    st = store.get("r")
    tail_pos = store._entries["r"].tail.pos
    assert tail_pos == ws.run("r").events.stat().st_size
    v = st.version
    assert store.get("r").version == v                       # nothing new: nothing changes
    with open(ws.run("r").events, "a") as f:
        f.write(json.dumps(_events()[3]) + "\n")
    assert store.get("r").version == v + 1 and len(st.steps) == 3


def test_new_run_id_is_unique() -> None:
    assert new_run_id("m", ["m-s"], stamp="s") == "m-s-2"
    assert new_run_id("m", [], stamp="s") == "m-s"


def test_read_run_names_a_missing_run(tmp_path: Path) -> None:
    from engine.core.errors import InputError
    with pytest.raises(InputError, match="not found"):
        read_run(Workspace.open(tmp_path / "ws"), "nope")


def test_epoch_event_typed() -> None:
    ev = parse_event({"type": "epoch", "epoch": 2, "improved": True, "val": {"metrics": {"recall@10": 0.5}}})
    assert isinstance(ev, Epoch) and ev.improved and ev.val["metrics"]["recall@10"] == 0.5
    assert isinstance(parse_event(RunStarted(pid=os.getpid(), time=time.time()).to_dict()), RunStarted)
