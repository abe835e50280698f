"""The pipeline on the tiny demo: end to end, caching, invalidation, atomic failure, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as cli
from engine.core.config import DataConfig, to_dict
from engine.core.errors import StageError
from engine.core.locks import lock_holder
from engine.data import pipeline
from engine.data.demo import generate_demo
from engine.data.manifest import Dataset, building_pid
from engine.data.pipeline import build, status


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tinysrc")
    generate_demo(d / "events.csv", d / "truth.npz", size="tiny", seed=0)
    return d / "events.csv"


def make_ds(workspace, src: Path, name="t", **cfg) -> Dataset:
    return Dataset.create(workspace, name, src, DataConfig(**cfg), demo={"size": "tiny", "seed": 0})


def states(ds):
    return {s.name: s.state for s in status(Dataset.load(ds.ws, ds.name))}


def snapshot(ds) -> dict[str, tuple[int, int]]:
    """mtime and size of every artifact file (not the manifest, not the build lock)."""
    out = {}
    for p in sorted(ds.dir.rglob("*")):
        if p.is_file() and p not in (ds.manifest_path, ds.paths.build_lock):
            st = p.stat()
            out[str(p.relative_to(ds.dir))] = (st.st_mtime_ns, st.st_size)
    return out


def test_end_to_end_tiny_demo(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    assert set(states(ds).values()) == {"missing"}
    res = build(ds)
    assert [r.name for r in res] == ["ingest", "sessionize", "split", "items", "graph", "encodings", "oracle"]
    assert all(r.ran for r in res)
    assert set(states(ds).values()) == {"done"}
    man = json.loads(ds.manifest_path.read_text())
    st = {k: v["stats"] for k, v in man["stages"].items()}
    assert st["ingest"]["events"] > 0 and st["ingest"]["reader"]["rows_valid"] == st["ingest"]["events"]
    ses = st["sessionize"]
    assert ses["sessions"] > 100 and ses["length_median"] >= 3 and ses["length_max"] <= 50
    assert 0 <= ses["repeat_rate"] <= 1
    assert abs(sum(ses["event_shares"].values()) - 1) < 1e-3
    spl = st["split"]
    assert spl["train"]["sessions"] > spl["val"]["sessions"] > 0 and spl["test"]["sessions"] > 0
    assert spl["train"]["sessions"] + spl["val"]["sessions"] + spl["test"]["sessions"] \
        + spl["blackout_dropped"] == ses["sessions"]
    n_items = st["items"]["items"]
    assert st["graph"]["nodes"] <= n_items and st["graph"]["edges"] > 0
    pe = np.load(ds.paths.pe)
    assert pe.shape == (n_items + 1, 16) and pe.dtype == np.float32 and not pe[0].any()
    assert 0 < st["oracle"]["recall@10_last"] <= 1
    # manifest records parameters, inputs, outputs, timings
    ing = man["stages"]["ingest"]
    assert ing["inputs"]["path"]["bytes"] == tiny_source.stat().st_size
    assert "events.parquet" in ing["outputs"] and ing["seconds"] >= 0
    assert man["stages"]["graph"]["params"] == {"window": 5}
    assert not list(ds.dir.rglob(".tmp-*"))


def test_rerun_is_a_noop(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    before = snapshot(ds)
    man_before = json.loads(ds.manifest_path.read_text())["stages"]
    res = build(Dataset.load(workspace, "t"))
    assert not any(r.ran for r in res)
    assert snapshot(ds) == before
    assert json.loads(ds.manifest_path.read_text())["stages"] == man_before


def test_parameter_change_reruns_stage_and_downstream(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    ds = Dataset.load(workspace, "t")
    ds.data["config"] = to_dict(dataclasses.replace(ds.config, cooc_window=2))
    ds.save()
    assert states(ds) == {"ingest": "done", "sessionize": "done", "split": "done", "items": "done",
                          "graph": "stale", "encodings": "stale", "oracle": "done"}
    ran = [r.name for r in build(ds) if r.ran]
    assert ran == ["graph", "encodings"]
    ds.data["config"] = to_dict(dataclasses.replace(ds.config, min_session_length=4))
    ds.save()
    ran = [r.name for r in build(ds) if r.ran]
    assert ran == ["sessionize", "split", "items", "graph", "encodings", "oracle"]
    st = json.loads(ds.manifest_path.read_text())["stages"]["sessionize"]["stats"]
    assert st["length_mean"] >= 4


def test_input_change_reruns_everything(workspace, tiny_source, tmp_path):
    src = tmp_path / "events.csv"
    src.write_bytes(tiny_source.read_bytes())
    (tmp_path / "truth.npz").write_bytes((tiny_source.parent / "truth.npz").read_bytes())
    ds = make_ds(workspace, src)
    build(ds)
    with open(src, "a") as f:
        f.write("1442004589439,999999,view,123,\n")
    assert states(ds)["ingest"] == "stale"
    ran = [r.name for r in build(Dataset.load(workspace, "t")) if r.ran]
    assert ran[0] == "ingest" and "encodings" in ran


def test_failed_stage_keeps_previous_artifacts(workspace, tiny_source, monkeypatch):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    before = (ds.paths.graph).read_bytes()

    def broken(ctx):
        (ctx.out.graph).write_bytes(b"half written")
        raise RuntimeError("disk on fire")
    stages = tuple(dataclasses.replace(s, run=broken) if s.name == "graph" else s for s in pipeline.STAGES)
    monkeypatch.setattr(pipeline, "STAGES", stages)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(Dataset.load(workspace, "t"), force="graph")
    assert (ds.paths.graph).read_bytes() == before
    assert not list(ds.dir.rglob(".tmp-*"))
    assert lock_holder(ds.paths.build_lock) is None          # released, whatever happened
    st = {s.name: s for s in status(Dataset.load(workspace, "t"))}
    assert st["graph"].state == "failed" and "disk on fire" in st["graph"].error
    monkeypatch.undo()
    ran = [r.name for r in build(Dataset.load(workspace, "t")) if r.ran]
    assert ran[0] == "graph"
    assert states(ds)["graph"] == "done"


def test_interrupted_stage_keeps_previous_record(workspace, tiny_source, monkeypatch):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    rec_before = Dataset.load(workspace, "t").stage_record("encodings")

    def interrupted(ctx):
        (ctx.out.pe).write_bytes(b"partial")
        raise KeyboardInterrupt
    stages = tuple(dataclasses.replace(s, run=interrupted) if s.name == "encodings" else s
                   for s in pipeline.STAGES)
    monkeypatch.setattr(pipeline, "STAGES", stages)
    with pytest.raises(KeyboardInterrupt):
        build(Dataset.load(workspace, "t"), force="encodings")
    ds2 = Dataset.load(workspace, "t")
    assert ds2.stage_record("encodings") == rec_before
    assert np.load(ds.paths.pe).dtype == np.float32
    assert not list(ds.dir.rglob(".tmp-*"))


def test_interrupted_swap_is_recovered(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    # simulate a crash between the two renames of the folder swap
    graph = ds.dir / "graph"
    os.replace(graph, ds.dir / ".tmp-graph.old")
    assert states(ds)["graph"] == "done"        # loading the dataset restored it
    assert (graph / "graph.npz").exists()


def test_build_lock_held_by_live_process(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    code = ("import sys, time; from pathlib import Path; from engine.core.locks import FolderLock; "
            "FolderLock(Path(sys.argv[1]), 'busy').acquire(); print('ok', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(ds.paths.build_lock)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StageError, match=f"being built by process {holder.pid}"):
            build(ds)
        assert building_pid(ds) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL): its lock went with it, whatever pid its file names
    ds.paths.build_lock.write_text("999999999")
    assert building_pid(ds) is None
    build(ds, upto="ingest")
    assert states(ds)["ingest"] == "done"


def test_cli_demo_status_and_errors(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    assert cli(["--workspace", ws, "-q", "demo", "--size", "tiny"]) == 0
    capsys.readouterr()
    assert cli(["--workspace", ws, "--events", "jsonl", "data", "status", "demo-tiny"]) == 0
    line = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")][-1]
    assert line["type"] == "result" and line["stages"]["encodings"]["state"] == "done"
    assert line["summary"]["oracle_recall@10_last"] > 0
    assert cli(["--workspace", ws, "data", "status"]) == 0
    assert "demo-tiny" in capsys.readouterr().out
    # one-line errors
    assert cli(["--workspace", ws, "data", "build", "nope"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'nope' not found" in err and "demo-tiny" in err and "Traceback" not in err
    assert cli(["--workspace", ws, "data", "import", str(tmp_path / "missing.csv"), "--format", "rsc15",
                "--name", "x"]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err
    assert cli(["--workspace", ws, "demo", "--size", "huge"]) == 2
    assert "unknown demo size 'huge'" in capsys.readouterr().err
