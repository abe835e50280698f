"""Data-side reliability: artifacts checked against the manifest, broken manifests, imports of odd
files, disk errors, temp leftovers, bad-row reports and file modes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.core.config import DataConfig
from engine.core.errors import InputError, StorageError
from engine.core.workspace import Workspace
from engine.data.artifacts import load_dataset
from engine.data.manifest import Dataset
from engine.data.pipeline import build, status
from tests.test_pipeline import make_ds, snapshot, states, tiny_source  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]


def stage_status(ds: Dataset) -> dict:
    return {s.name: s for s in status(Dataset.load(ds.ws, ds.name))}


def ran(ds: Dataset, **kw) -> list[str]:
    return [r.name for r in build(Dataset.load(ds.ws, ds.name), **kw) if r.ran]


# ---- 1. artifacts are checked against the manifest ------------------------------------------------

def test_outputs_record_size_and_quick_check(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    out = Dataset.load(workspace, "t").stage_record("items")["outputs"]
    assert set(out) == {"items.parquet", "train.parquet", "val.parquet", "test.parquet"}
    items = out["items.parquet"]
    assert items["bytes"] == ds.paths.items.stat().st_size
    assert len(items["quick_blake2b"]) == 32 and set(items["quick_blake2b"]) <= set("0123456789abcdef")


def test_truncated_output_is_stale_and_rebuilt_without_force(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    good = ds.paths.items.read_bytes()
    ds.paths.items.write_bytes(good[: len(good) // 2])
    st = stage_status(ds)
    assert st["items"].state == "stale"
    assert "items/items.parquet" in st["items"].error and f"{len(good):,}" in st["items"].error
    assert st["split"].state == st["graph"].state == "done"
    with pytest.raises(InputError, match=r"not built \(items: stale: items/items.parquet"):
        load_dataset(workspace, "t")
    assert ran(ds) == ["items", "graph", "encodings"]
    assert ds.paths.items.read_bytes() == good
    assert set(states(ds).values()) == {"done"}
    assert load_dataset(workspace, "t").n_items > 0


def test_same_size_overwrite_is_caught_by_the_content_check(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    data = bytearray(ds.paths.pe.read_bytes())
    data[-1] ^= 0xFF
    ds.paths.pe.write_bytes(bytes(data))
    st = stage_status(ds)
    assert st["encodings"].state == "stale" and "encodings/pe.npy" in st["encodings"].error
    assert "content" in st["encodings"].error
    assert ran(ds) == ["encodings"]


def test_missing_output_file_is_stale(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    ds.paths.graph.unlink()
    st = stage_status(ds)
    assert st["graph"].state == "stale" and "graph/graph.npz is missing" in st["graph"].error
    assert ran(ds) == ["graph", "encodings"]


def test_manifest_without_quick_checks_keeps_working(workspace, tiny_source):
    """Manifests written before the content check: size only, no spurious rebuild."""
    ds = make_ds(workspace, tiny_source)
    build(ds)
    man = json.loads(ds.manifest_path.read_text())
    for rec in man["stages"].values():
        rec["outputs"] = {f: {"bytes": o["bytes"]} for f, o in rec["outputs"].items()}
    ds.manifest_path.write_text(json.dumps(man))
    before = snapshot(ds)
    assert set(states(ds).values()) == {"done"}
    assert ran(ds) == []
    assert snapshot(ds) == before
    with open(ds.paths.graph, "ab") as f:
        f.write(b"x")
    assert stage_status(ds)["graph"].state == "stale"
    assert ran(ds) == ["graph", "encodings"]


BROKEN_MANIFESTS = [
    ("{}", r"missing key\(s\) source, config, stages; expected a sessrec dataset manifest"),
    ('{"source": {"path": "e.csv"}, "config": {}}', r"missing key\(s\) stages"),
    ("[1, 2]", r"expected a JSON object .*, found an array"),
    ('{"source": [], "config": {}, "stages": {}}', r"'source' is an array; expected an object"),
    ('{"source": {"path": "e.csv"}, "config": {}, "stages": {"ingest": 3}}',
     r"'stages.ingest' is a number; expected an object"),
    ('{"source": {"path": 7}, "config": {}, "stages": {}}', r"'source.path' is a number; expected a string"),
    ('{"source": {"path": "e.csv"}, "config": {"bogus": 1}, "stages": {}}',
     r"'config': DataConfig: unknown field\(s\) bogus"),
    ("{not json", r"not valid JSON"),
    ("\xff\xfe{}", r"not valid JSON"),
]


@pytest.mark.parametrize("text,expected", BROKEN_MANIFESTS)
def test_broken_manifest_is_a_one_line_error(workspace, tmp_path, capsys, text, expected):
    folder = workspace.dataset("bad").root
    folder.mkdir(parents=True)
    workspace.dataset("bad").manifest.write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=r"datasets/bad/manifest.json: " + expected):
        Dataset.load(workspace, "bad")
    for args in (["data", "status", "bad"], ["data", "build", "bad"]):
        assert cli(["--workspace", str(workspace.root), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "manifest.json" in err and "Traceback" not in err
    assert "sessrec data delete bad" in err
    # the advice works: a dataset with an unreadable manifest can be deleted
    assert cli(["--workspace", str(workspace.root), "-q", "data", "delete", "bad", "--yes"]) == 0
    assert not folder.exists()


# ---- 2. one unreadable dataset never hides the others ---------------------------------------------

def _break(workspace, name: str, text: str) -> None:
    workspace.dataset(name).root.mkdir(parents=True)
    workspace.dataset(name).manifest.write_text(text)


def test_status_lists_readable_datasets_and_marks_unreadable_ones(workspace, tiny_source, capsys):
    build(make_ds(workspace, tiny_source, name="good"))
    _break(workspace, "a-empty", "{}")
    _break(workspace, "z-json", "{oops")
    ws = str(workspace.root)
    assert cli(["--workspace", ws, "--events", "jsonl", "data", "status"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    by_name = {d["dataset"]: d for d in res["datasets"]}
    assert list(by_name) == ["a-empty", "good", "z-json"]
    assert set(by_name["good"]["stages"].values()) == {"done"} and "error" not in by_name["good"]
    assert by_name["good"]["summary"]["sessions"] > 100
    assert "missing key(s) source, config, stages" in by_name["a-empty"]["error"]
    assert "not valid JSON" in by_name["z-json"]["error"]
    assert cli(["--workspace", ws, "data", "status"]) == 0
    out = capsys.readouterr().out
    assert "all 7 done" in out and out.count("unreadable") == 2


def test_dataset_report(workspace, tiny_source):
    from engine.data.report import dataset_report, dataset_reports, stage_note
    build(make_ds(workspace, tiny_source, name="good"))
    _break(workspace, "bad", "[]")
    good = dataset_report(workspace, "good")
    assert good.error is None and good.is_demo and good.format == "retailrocket"
    assert good.source == str(tiny_source)
    assert [s.name for s in good.stages] == ["ingest", "sessionize", "split", "items", "graph",
                                              "encodings", "oracle"]
    assert good.built and good.fully_built and good.state_of("graph") == "done"
    sts = status(Dataset.load(workspace, "good"))
    assert [s.note for s in good.stages] == [stage_note(s) for s in sts]
    assert good.stages[4].note.startswith(f"{sts[4].stats['nodes']:,} nodes, ")
    assert good.summary["sessions"] == sts[1].stats["sessions"]
    bad = dataset_report(workspace, "bad")
    assert bad.name == "bad" and bad.stages == [] and not bad.built
    assert "manifest.json: expected a JSON object" in bad.error
    assert [r.name for r in dataset_reports(workspace)] == ["bad", "good"]
    assert "not found" in dataset_report(workspace, "nope").error


def test_stage_note():
    from engine.data.pipeline import StageStatus
    from engine.data.report import stage_note
    graph = {"nodes": 1200, "edges": 34567, "avg_degree": 57.6, "components": 3}
    assert stage_note(StageStatus("graph", "done", graph, 1.0, None)) == \
        "1,200 nodes, 34,567 edges, avg degree 57.6, 3 components"
    assert stage_note(StageStatus("graph", "stale", graph, 1.0, None, "graph/graph.npz is missing")) \
        == "graph/graph.npz is missing"
    assert stage_note(StageStatus("ingest", "failed", {}, None, None, "x" * 100)) == "x" * 80
    assert stage_note(StageStatus("graph", "missing", {}, None, None)) == ""
    assert stage_note(StageStatus("graph", "done", {"nodes": "odd"}, 1.0, None)) == ""


def test_report_module_imports_on_its_own():
    """The app imports engine.data.report first (engine.cli imports it too: no import cycle)."""
    proc = subprocess.run([sys.executable, "-c", "import engine.data.report as r; print(r.stage_note)"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---- 3. data import refuses what is not a regular file; a failed import leaves nothing ------------

@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (opening a FIFO blocks until a writer comes)."""
    def timeout(signum, frame):
        raise TimeoutError(f"still running after {seconds}s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _odd_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"odd-{kind}"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind,said", [("directory", "is a directory"), ("fifo", "is a FIFO")])
@pytest.mark.parametrize("role", ["path", "test-file"])
def test_import_refuses_a_non_regular_file(tmp_path, tiny_source, capsys, kind, said, role):
    ws = str(tmp_path / "ws")
    odd = _odd_file(tmp_path, kind)
    args = [str(odd), "--format", "retailrocket", "--name", "x"] if role == "path" else \
        [str(tiny_source), "--format", "retailrocket", "--name", "x", "--test-file", str(odd)]
    with deadline(20):
        assert cli(["--workspace", ws, "data", "import", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{odd}: {said}" in err
        assert "expected a RetailRocket events.csv file" in err and "Traceback" not in err
        assert not (tmp_path / "ws" / "datasets" / "x").exists()
        assert cli(["--workspace", ws, "data", "status"]) == 0
        assert "no datasets" in capsys.readouterr().out


def test_status_of_a_dataset_whose_source_became_a_fifo(workspace, tiny_source, tmp_path):
    src = tmp_path / "events.csv"
    src.write_bytes(tiny_source.read_bytes())
    ds = Dataset.create(workspace, "t", src, DataConfig(format="retailrocket"))
    src.unlink()
    os.mkfifo(src)
    with deadline(20):
        st = stage_status(ds)
        assert st["ingest"].state == "missing" and f"{src}: is a FIFO" in st["ingest"].error


def test_failed_import_leaves_no_dataset_and_the_retry_works(tmp_path, tiny_source, capsys):
    ws = str(tmp_path / "ws")
    folder = tmp_path / "ws" / "datasets" / "x"
    src = tmp_path / "events.csv"
    src.write_text("SessionId\tItemId\tTime\n1\t2\t3.0\n")
    imp = ["--workspace", ws, "data", "import", str(src), "--format", "retailrocket", "--name", "x"]
    assert cli(imp) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{src}: wrong header" in err
    assert "expected 'timestamp,visitorid,event,itemid,transactionid'" in err
    assert not folder.exists()
    assert cli(["--workspace", ws, "data", "status"]) == 0
    assert "no datasets" in capsys.readouterr().out
    src.write_bytes(tiny_source.read_bytes())       # the fixed file, same path
    assert cli(["-q", *imp]) == 0
    assert set(states(Dataset.load(Workspace.open(tmp_path / "ws"), "x")).values()) == {"done"}


def test_failed_build_never_removes_an_existing_dataset(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    src = tmp_path / "events.csv"
    src.write_text("SessionId\tItemId\tTime\n1\t2\t3.0\n")
    imp = ["--workspace", ws, "data", "import", str(src), "--format", "retailrocket", "--name", "x"]
    assert cli([*imp, "--no-build"]) == 0
    assert cli(imp) == 2                     # the dataset existed: its build fails, it stays
    assert "wrong header" in capsys.readouterr().err
    assert (tmp_path / "ws" / "datasets" / "x" / "manifest.json").exists()


# ---- 4. disk full and other OS errors while writing ------------------------------------------------

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def test_atomic_writers_raise_storage_error_and_keep_the_old_file(tmp_path):
    from engine.core import atomic
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(StorageError) as e:
        with atomic.atomic_path(target, "test output") as tmp:
            tmp.write_text("half")
            raise ENOSPC
    assert str(e.value) == f"could not write test output {target}: [Errno 28] No space left on device"
    assert e.value.path == target and e.value.error is ENOSPC and e.value.what == "test output"
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    # pickles with its three arguments (the message is rebuilt)
    again = pickle.loads(pickle.dumps(e.value))
    assert str(again) == str(e.value) and again.path == target


def test_write_json_where_a_file_blocks_the_folder(tmp_path):
    from engine.core import atomic
    (tmp_path / "blocker").write_text("a file, not a folder")   # fails for root too
    with pytest.raises(StorageError, match=r"^could not write dataset manifest .*/blocker/m.json: "
                                           r"\[Errno 17\] File exists$"):
        atomic.write_json(tmp_path / "blocker" / "m.json", {"a": 1}, "dataset manifest")


def test_stage_write_error_names_the_stage_and_keeps_previous_artifacts(workspace, tiny_source,
                                                                       monkeypatch):
    from engine.data import graph as graph_mod
    ds = make_ds(workspace, tiny_source)
    build(ds)
    before = snapshot(ds)

    def full(*args, **kwargs):
        raise ENOSPC
    monkeypatch.setattr(graph_mod.np, "savez", full)
    with pytest.raises(StorageError) as e:
        build(Dataset.load(workspace, "t"), force="graph")
    msg = str(e.value)
    assert msg.startswith(f"could not write graph stage output {ds.dir}/.tmp-graph.")
    assert msg.endswith("/graph.npz: [Errno 28] No space left on device")
    assert snapshot(ds) == before and not list(ds.dir.rglob(".tmp-*"))
    rec = Dataset.load(workspace, "t").stage_record("graph")
    assert rec["status"] == "failed" and "traceback" not in rec and "No space left" in rec["error"]


def _limited(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    return preexec


def engine_cli(ws: Path, *args: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "--workspace", str(ws), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def test_file_too_large_is_one_line_and_keeps_previous_artifacts(workspace, tiny_source):
    """For real: the OS refuses the write (RLIMIT_FSIZE); graph.npz of the tiny demo is ~190 kB,
    every other file (manifest included) is under 40 kB."""
    ds = make_ds(workspace, tiny_source)
    build(ds)
    assert ds.paths.graph.stat().st_size > 100_000
    before = snapshot(ds)
    proc = engine_cli(workspace.root, "data", "build", "t", "--force", "graph",
                      preexec=_limited(100_000))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"sessrec: error: could not write graph stage output {ds.dir}/.tmp-graph.")
    assert lines[0].endswith("/graph.npz: [Errno 27] File too large")
    assert snapshot(ds) == before and not list(ds.dir.rglob(".tmp-*"))
    assert stage_status(ds)["graph"].state == "failed"
    assert ran(ds) == ["graph", "encodings"]


# ---- 5. leftovers of killed stages are removed by the next build ----------------------------------

def test_build_removes_temp_leftovers(workspace, tiny_source):
    ds = make_ds(workspace, tiny_source)
    build(ds)
    before = snapshot(ds)
    leftovers = [ds.dir / ".tmp-graph.xyz", ds.dir / ".tmp-split.q1", ds.paths.items.parent / ".tmp-x.dir"]
    for d in leftovers:
        d.mkdir()
        (d / "graph.npz").write_bytes(b"half")
    files = [ds.dir / ".tmp-manifest.json.abc", ds.paths.items.parent / ".tmp-items.parquet.k2"]
    for f in files:
        f.write_bytes(b"half")
    assert ran(ds) == []                # nothing to rebuild: the leftovers are just removed
    assert not list(ds.dir.rglob(".tmp-*"))
    assert snapshot(ds) == before


# ---- 6. bad-row reasons and their first line numbers are shown ------------------------------------

def test_bad_rows_text():
    from engine.data.report import bad_rows_text
    assert bad_rows_text({}) == ""
    assert bad_rows_text({"path": "/x/ev.csv", "bad_rows": {
        "missing_field": {"count": 7, "first_lines": [2, 3, 5, 6, 8]},
        "bad_timestamp": {"count": 1, "first_lines": [10]}}}) == \
        "ev.csv: skipped 8 bad rows: missing or extra fields (7; first lines 2, 3, 5, 6, 8), " \
        "bad timestamp (1; line 10)"


def test_bad_rows_in_import_and_status_output(tmp_path, tiny_source, capsys):
    lines = tiny_source.read_text().splitlines()
    for i, row in ((4, "1433221332117,abc,view,1,"),      # line 5: non-numeric visitor
                   (8, "1433221332117,5,view,x9,"),       # line 9: non-numeric item
                   (11, "1433221332117,5,click,1,")):     # line 12: unknown event type
        lines.insert(i, row)
    src = tmp_path / "events.csv"
    src.write_text("\n".join(lines) + "\n")
    expected = "events.csv: skipped 3 bad rows: non-numeric or negative id (2; lines 5, 9), " \
               "unknown event type (1; line 12)"
    ws = str(tmp_path / "ws")
    assert cli(["--workspace", ws, "-q", "data", "import", str(src), "--format", "retailrocket",
                "--name", "x"]) == 0
    assert expected in capsys.readouterr().out.splitlines()
    assert cli(["--workspace", ws, "data", "status", "x"]) == 0
    out = capsys.readouterr().out
    assert expected in out.splitlines() and "3 bad rows" in out
    assert cli(["--workspace", ws, "--events", "jsonl", "data", "status", "x"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["bad_rows"] == [expected]


# ---- 7. files and folders follow the user's umask --------------------------------------------------

def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_built_dataset_follows_the_umask(tmp_path):
    def umask_022() -> None:
        os.umask(0o022)
    ws = tmp_path / "ws"
    proc = engine_cli(ws, "-q", "demo", "--size", "tiny", preexec=umask_022)
    assert proc.returncode == 0, proc.stderr
    d = Workspace.open(ws).dataset("demo-tiny")
    assert _mode(d.manifest) == _mode(d.items) == _mode(d.events) == _mode(d.demo_events) == 0o644
    assert _mode(d.pe) == _mode(d.graph) == 0o644
    for stage in ("ingest", "items", "graph", "encodings", "oracle"):
        assert _mode(d.stage_dir(stage)) == 0o755


def test_atomic_writers_apply_the_umask(tmp_path, monkeypatch):
    from engine.core import atomic
    monkeypatch.setattr(atomic, "UMASK", 0o027)
    atomic.write_text(tmp_path / "f.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inner").write_text("y")
    assert _mode(tmp_path / "f.txt") == 0o640 and _mode(tmp_path / "d") == 0o750
    real = os.umask(0o077)
    os.umask(real)
    assert atomic._read_umask() == real

