"""The AOTInductor-compiled encoder (`--runtime compiled`): parity, the run's own package and when it
is rebuilt, refusals, the CLI, and serving through it.

One real compile of a tiny Graph Transformer per module (~30 s on 2 cores: a C++ build); the other
tests reuse its package instead of compiling again.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import engine.export.compiled as comp
from engine.cli import main as cli
from engine.core.errors import InputError
from engine.export.contract import ExportError
from engine.export.trace import load_run
from engine.inference.recommend import Recommender
from engine.train.loop import fit
from tests.conftest import small_cfg

if shutil.which(os.environ.get("CXX", "g++")) is None:
    pytest.skip("no C++ compiler: AOTInductor cannot build here", allow_module_level=True)


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    return tiny_demo_ws


@pytest.fixture(scope="module")
def run(ws):
    fit(small_cfg(epochs=1), ws, run_id="aoti-gt")
    return ws.run("aoti-gt")


@pytest.fixture(scope="module")
def built(run, tmp_path_factory):
    """(report, a copy of the package and its sidecar made by the module's one real compile)."""
    report = comp.compile_encoder(run, run.compiled("cpu"), parity_limit=300)
    keep = tmp_path_factory.mktemp("aoti") / "kept.pt2"
    shutil.copy(report.path, keep)
    return report, keep


@pytest.fixture(scope="module")
def loaded(run):
    return load_run(run)


def reuse_package(monkeypatch, built):
    """Make compile_encoder skip torch.export and AOTInductor: it gets a copy of the module's package."""
    def fake(graph, args, package, run):
        shutil.copy(built[1], package)
        return package
    monkeypatch.setattr(comp, "_compile", fake)


def restore(run, built):
    """Put the module's package and a sidecar naming it back at the run's own path."""
    path = run.compiled("cpu")
    meta = json.loads(comp.sidecar(built[0].path).read_text()) if comp.sidecar(path).exists() else None
    shutil.copy(built[1], path)
    if meta is not None:
        st = path.stat()
        meta.update(package_size=st.st_size, package_mtime_ns=st.st_mtime_ns)
        comp.sidecar(path).write_text(json.dumps(meta))


# ---- the package -----------------------------------------------------------------------------------
def test_compile_writes_the_package_and_its_record(built, run, loaded):
    report = built[0]
    path = report.path
    assert path == run.root / "export" / "encoder-cpu.pt2" and path.exists()
    assert report.size_bytes == path.stat().st_size > 0
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["encoder-cpu.pt2", "encoder-cpu.pt2.json", "encoder-cpu.pt2.lock"] or \
        names == ["encoder-cpu.pt2", "encoder-cpu.pt2.json"]                      # no temp folder left
    meta = comp.read_metadata(path)
    assert meta["run_id"] == "aoti-gt" and meta["device"] == "cpu" and meta["format"] == comp.FORMAT
    assert meta["checkpoint"] == loaded.checkpoint.name
    assert meta["checkpoint_size"] == str(loaded.checkpoint.stat().st_size)
    assert meta["item_fingerprint"] == loaded.data.items.fingerprint()
    p = report.parity
    assert p.rows == 304                     # 300 test prefixes + the 4 edge cases
    assert p.top10_set_share == 1.0 and p.max_rel_error <= 1e-4 and p.max_rel_error_encode <= 1e-4


def test_the_encoder_matches_the_model_at_any_shape(built, loaded):
    model = loaded.model.eval()
    enc = comp.CompiledEncoder(built[0].path, model)
    from engine.data.batches import BatchBuilder, SessionStore
    from engine.data.sessions import Sessions
    builder = BatchBuilder(SessionStore(Sessions.empty(np.int32)), model.n_items, model.graph_mode)
    n = model.n_items
    # one item; repeats; longer than anything the trace saw (dynamic L, N, M); several sessions
    for prefixes in ([[3]], [[5, 5, 5, 2, 5]], [[(i * 7) % n + 1 for i in range(90)]],
                     [[1, 2], [4], [9, 8, 7, 9], []]):
        b = builder.from_prefixes(prefixes)
        with torch.no_grad():
            want_r, want_c = model.encode(b)
        got_r, got_c = enc.encode(b)
        assert got_r.shape == want_r.shape and got_c.shape == want_c.shape
        assert torch.allclose(got_r, want_r, rtol=1e-4, atol=1e-5)
        assert torch.allclose(got_c, want_c, rtol=1e-4, atol=1e-5)
    assert torch.equal(enc.item_table(), model.item_table())


def test_the_compiled_runtime_recommends_what_torch_recommends(built, ws, run):
    eager = Recommender.load(run, runtime="torch")
    compiled = Recommender.load(run, runtime="compiled")              # the run's own package, fresh
    assert compiled.meta["runtime"] == "compiled"
    raw = eager.items.raw_ids
    for s in ([raw[3], raw[5], raw[3]], [raw[0]], raw[:12].tolist(), [-1, raw[2]]):
        want, got = eager.recommend(list(s), 10), compiled.recommend(list(s), 10)
        assert got.items == want.items and np.allclose(got.scores, want.scores, rtol=1e-4, atol=1e-4)
        assert got.unknown == want.unknown


def test_serving_through_the_compiled_runtime(built, ws, run):
    from fastapi.testclient import TestClient

    from engine.serve.app import create_app
    from engine.serve.server import ServeOptions, make_slot
    slot = make_slot(ws, ServeOptions(target="aoti-gt", runtime="compiled", search="exact"))
    c = TestClient(create_app(slot))
    assert c.get("/health").json()["runtime"] == "compiled"
    raw = slot.current.rec.items.raw_ids
    got = c.post("/recommend", json={"session_items": raw[:4].tolist(), "k": 5}).json()
    want = Recommender.load(run, runtime="torch").recommend(raw[:4].tolist(), 5)
    assert got["items"] == want.items
    with pytest.raises(InputError, match="torch runtime only"):
        make_slot(ws, ServeOptions(target="baseline:sknn@demo-tiny", runtime="compiled"))


# ---- refusals --------------------------------------------------------------------------------------
def test_a_package_changed_after_its_record_or_a_foreign_file_is_refused(built, run, tmp_path):
    path = tmp_path / "enc.pt2"
    shutil.copy(built[0].path, path)
    with pytest.raises(InputError, match="enc.pt2: not a compiled sessrec encoder"):
        comp.read_metadata(path)                                  # no sidecar
    shutil.copy(comp.sidecar(built[0].path), comp.sidecar(path))
    with pytest.raises(InputError, match="the package changed after enc.pt2.json was written"):
        comp.read_metadata(path)                                  # the record names another file
    comp.sidecar(path).write_text('{"format": "other"}')
    with pytest.raises(InputError, match="not a sessrec compiled-encoder record"):
        comp.read_metadata(path)
    bad = tmp_path / "garbage.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="garbage.pt2: cannot load the compiled encoder"):
        comp.CompiledEncoder(bad, load_run(run).model, check=False)


def test_a_package_for_another_item_index_is_refused(built, loaded):
    from engine.data.items import ItemIndex
    enc = comp.CompiledEncoder(built[0].path, loaded.model)
    other = ItemIndex(loaded.data.items.raw_ids + 1, loaded.data.items.train_counts)
    with pytest.raises(InputError, match="exported for item index .* retrain the model and re-export"):
        enc.check_items(other)
    enc.check_items(loaded.data.items)


def test_a_baseline_run_or_a_wrong_name_is_refused(ws, run, tmp_path):
    fit(small_cfg(model="pop", model_params={}, epochs=1), ws, run_id="aoti-pop")
    with pytest.raises(InputError, match="pop is a baseline; export is for the session GNNs"):
        comp.compile_encoder(ws.run("aoti-pop"), tmp_path / "p.pt2")
    with pytest.raises(InputError, match="is a .pt2 package"):
        comp.compile_encoder(run, tmp_path / "p.so")


def test_a_failing_compiler_is_a_clear_error_and_leaves_nothing(run, monkeypatch, tmp_path):
    def broken(program, package_path, inductor_configs):
        raise RuntimeError("g++: command not found")
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    out = tmp_path / "x" / "enc.pt2"
    with pytest.raises(ExportError, match=r"AOTInductor could not compile .* needs a working C\+\+ compiler"):
        comp.compile_encoder(run, out, parity_limit=10)
    assert list(out.parent.iterdir()) == []


def test_failing_parity_leaves_no_file_and_keeps_the_old_one(built, run, monkeypatch, tmp_path):
    reuse_package(monkeypatch, built)
    out = tmp_path / "enc.pt2"
    out.write_bytes(b"an older package")
    with pytest.raises(ExportError, match=r"does not reproduce PyTorch .* not written"):
        comp.compile_encoder(run, out, parity_limit=20, max_rel=-1.0)   # no error is <= -1
    assert out.read_bytes() == b"an older package" and sorted(p.name for p in tmp_path.iterdir()) == ["enc.pt2"]


# ---- the run's own package -----------------------------------------------------------------------
def test_ensure_run_compiled_rebuilds_only_when_stale(built, run, monkeypatch):
    path = run.compiled("cpu")
    calls = []
    real = comp.compile_encoder

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(comp, "compile_encoder", counting)
    reuse_package(monkeypatch, built)
    try:
        assert comp.ensure_run_compiled(run) == path and calls == []           # fresh: kept
        st = run.best.stat()
        os.utime(run.best, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))        # the checkpoint changed
        try:
            assert comp.ensure_run_compiled(run, parity_limit=10) == path and len(calls) == 1
            assert comp.read_metadata(path)["checkpoint_mtime_ns"] == str(st.st_mtime_ns + 10**9)
        finally:
            os.utime(run.best, ns=(st.st_atime_ns, st.st_mtime_ns))
        comp.sidecar(path).unlink()                                            # no record: rebuilt
        comp.ensure_run_compiled(run, parity_limit=10)
        assert len(calls) == 2
        comp.ensure_run_compiled(run)
        assert len(calls) == 2
    finally:
        restore(run, built)


def test_cli_compiles_into_the_run_or_a_named_file(ws, run, built, monkeypatch, tmp_path, capsys):
    reuse_package(monkeypatch, built)
    out = tmp_path / "cli.pt2"
    rc = cli(["--workspace", str(ws.root), "--events", "jsonl", "export", "aoti-gt", "--compiled", str(out),
              "--parity-limit", "40"])
    assert rc == 0 and out.exists() and comp.sidecar(out).exists()
    res = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert res["type"] == "result" and res["export"]["path"] == str(out)
    assert res["export"]["parity"]["rows"] == 44 and res["export"]["parity"]["top10_set_share"] == 1.0
    assert cli(["--workspace", str(ws.root), "export", "aoti-gt", "--compiled", str(out),
                "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "choose one export" in capsys.readouterr().err
