"""ONNX export of session GNN runs: contract, parity with PyTorch, the runtime, refusals, the CLI.

One real export of a tiny Graph Transformer per module (~8 s); tests that only need *an* exported
graph (failing parity, interrupt, CLI) reuse its traced graph instead of tracing again.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import engine  # noqa: E402
import engine.export.onnx as exp  # noqa: E402
from engine.cli import main as cli  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.data.batches import BatchBuilder, SessionStore  # noqa: E402
from engine.data.items import ItemIndex  # noqa: E402
from engine.data.sessions import Sessions  # noqa: E402
from engine.export.contract import INPUT_NAMES, OUTPUT_NAMES, TABLE_INITIALIZER, ExportError  # noqa: E402
from engine.export.onnx_runtime import OnnxEncoder, ensure_run_onnx, read_metadata  # noqa: E402
from engine.models.checkpoint import load_checkpoint  # noqa: E402
from engine.models.gnn import session_scores  # noqa: E402
from engine.train.loop import fit  # noqa: E402
from tests.conftest import small_cfg  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    return tiny_demo_ws


@pytest.fixture(scope="module")
def run(ws):
    fit(small_cfg(epochs=1), ws, run_id="onnx-gt")
    return ws.run("onnx-gt")


@pytest.fixture(scope="module")
def traced(run, tmp_path_factory):
    """(report of the real export, a copy of its traced ModelProto)."""
    protos = []
    orig = exp._to_onnx

    def keep(graph, sample):
        proto = orig(graph, sample)
        protos.append(copy.deepcopy(proto))
        return proto
    exp._to_onnx = keep
    try:
        report = exp.export_onnx(run, tmp_path_factory.mktemp("onnx") / "gt.onnx", parity_limit=300)
    finally:
        exp._to_onnx = orig
    return report, protos[0]


@pytest.fixture(scope="module")
def report(traced):
    return traced[0]


@pytest.fixture(scope="module")
def loaded(run):
    return exp.load_run(run)


@pytest.fixture(scope="module")
def builder(loaded):
    return BatchBuilder(SessionStore(Sessions.empty(np.int32)), loaded.model.n_items, loaded.model.graph_mode)


@pytest.fixture(scope="module")
def encoder(report):
    return OnnxEncoder(report.path)


def reuse_trace(monkeypatch, traced, perturb=None):
    """Make export_onnx skip tracing: it gets a copy of the module's traced graph."""
    def fake(graph, sample):
        proto = copy.deepcopy(traced[1])
        if perturb:
            perturb(proto)
        return proto
    monkeypatch.setattr(exp, "_to_onnx", fake)


# ---- the file --------------------------------------------------------------------------------------
def test_export_writes_the_contract_and_metadata(report, run, loaded):
    path = report.path
    assert path.exists() and report.size_bytes == path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["gt.onnx"]          # no temp file left
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    V, d = loaded.data.n_items, 16
    table = next(i for i in proto.graph.initializer if i.name == TABLE_INITIALIZER)
    assert list(table.dims) == [d, V + 1]
    meta = read_metadata(path)
    ckpt = load_checkpoint(run.best)
    st = run.best.stat()
    assert meta == report.metadata
    assert meta == {
        "contract_version": "1", "sessrec_version": engine.__version__, "run_id": "onnx-gt",
        "model": "graph_transformer", "dataset": "demo-tiny", "n_items": str(V), "hidden": "16",
        "graph_mode": "transitions", "item_fingerprint": ckpt["item_fingerprint"], "checkpoint": "best.pt",
        "checkpoint_mtime_ns": str(st.st_mtime_ns), "checkpoint_size": str(st.st_size),
        "epoch": str(ckpt["epoch"]), "item_table": f"{TABLE_INITIALIZER}:dv"}
    assert ckpt["item_fingerprint"] == loaded.data.items.fingerprint()


def test_parity_report(report, loaded):
    from engine.data.examples import make_examples
    p = report.parity
    n_test = len(make_examples(loaded.data.test, "prefixes"))
    assert p.rows == min(300, n_test) + 4                  # the sample plus 4 hand-made sessions
    assert p.top10_set_share >= 0.99 and p.top10_order_share >= 0.99
    assert 0 <= p.max_rel_error <= TOL and 0 <= p.max_rel_error_encode <= TOL
    assert report.seconds >= report.export_seconds > 0


# ---- ONNX Runtime against PyTorch ------------------------------------------------------------------
SESSIONS = [
    [[], [3], [5, 7, 5, 5, 9, 7], list(range(1, 51))],     # empty, one item, repeats, long (L = 50)
    [[2, 4]],                                               # B = 1, L = 2
    [[3]],                                                  # B = L = N = 1, no edge
    [[8], [8, 8, 8]],                                       # a one-node session graph with self loops
    [[], []],                                               # no graph node at all (dummy node path)
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return exp.rel_error(a, b)


@pytest.mark.parametrize("prefixes", SESSIONS, ids=["mixed", "pair", "single", "loops", "all-empty"])
def test_onnx_scores_equal_torch_score(encoder, loaded, builder, prefixes):
    b = builder.from_prefixes(prefixes)
    with torch.no_grad():
        ref = loaded.model.score(b)
    got = encoder.scores(b)
    assert got.shape == ref.shape == (len(prefixes), loaded.data.n_items + 1) and got.dtype == torch.float32
    assert torch.isneginf(got[:, 0]).all() and torch.isfinite(got[:, 1:]).all()
    assert rel(got, ref) <= TOL
    # the ranking is the model's: same top-10 lists
    assert torch.equal(got.topk(10).indices, ref.topk(10).indices)


def test_repeat_cells_are_in_the_onnx_output(encoder, builder):
    # each cell of a repeated item carries the same logit; padding cells are 0
    b = builder.from_prefixes([[5, 7, 5, 5, 9, 7], [4]])
    _, cells = encoder.encode(b)
    assert cells.shape == (2, 6)
    c = cells[0]
    assert c[0] == c[2] == c[3] and c[1] == c[5] and bool((cells[1, 1:] == 0).all())


def test_encoder_matches_the_model(encoder, loaded, builder):
    m = loaded.model
    assert (encoder.n_items, encoder.hidden, encoder.graph_mode) == (m.n_items, 16, "transitions")
    with torch.no_grad():
        assert torch.equal(encoder.item_table(), m.item_table())
        for prefixes in SESSIONS:
            b = builder.from_prefixes(prefixes)
            reps, cells = encoder.encode(b)
            t_reps, t_cells = m.encode(b)
            assert reps.shape == t_reps.shape and cells.shape == t_cells.shape
            assert rel(reps, t_reps) <= TOL and rel(cells, t_cells) <= TOL
            # the serving path: encode + the stored table = the model's scores
            assert rel(session_scores(reps, cells, b.items, encoder.item_table()), m.score(b)) <= TOL


def test_encode_runs_a_sub_model_without_the_item_table(encoder, report):
    table_bytes = encoder.item_table().numel() * 4
    assert encoder.encode_model_bytes < report.size_bytes - table_bytes


# ---- refusals ---------------------------------------------------------------------------------------
def test_a_baseline_run_is_refused(ws, tmp_path):
    fit(small_cfg(model="pop", model_params={}), ws, run_id="onnx-pop")
    with pytest.raises(InputError, match=r"run onnx-pop: pop is a baseline; export is for the session GNNs"):
        exp.export_onnx(ws.run("onnx-pop"), tmp_path / "pop.onnx")
    assert not any(tmp_path.iterdir())


def test_failing_parity_leaves_no_file(run, traced, monkeypatch, tmp_path):
    def perturb(proto):                # shift the readout's output bias: every session vector moves
        init = next(i for i in proto.graph.initializer if i.name == "model.readout.w3.bias")
        arr = onnx.numpy_helper.to_array(init) + 0.5
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    reuse_trace(monkeypatch, traced, perturb)
    with pytest.raises(ExportError, match=r"does not reproduce PyTorch .* not written"):
        exp.export_onnx(run, tmp_path / "bad.onnx", parity_limit=50)
    assert not any(tmp_path.iterdir())


def test_interrupt_leaves_no_file(run, traced, monkeypatch, tmp_path):
    reuse_trace(monkeypatch, traced)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(exp, "check_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        exp.export_onnx(run, tmp_path / "x.onnx", parity_limit=50)
    assert not any(tmp_path.iterdir())


def test_a_file_for_another_item_index_is_refused(encoder, loaded, report):
    encoder.check_items(loaded.data.items)                       # its own index: fine
    items = loaded.data.items
    other = ItemIndex(items.raw_ids[::-1].copy(), items.train_counts[::-1].copy())
    with pytest.raises(InputError, match=r"gt.onnx: exported for item index .* retrain the model and re-export"):
        encoder.check_items(other)


def test_a_foreign_file_is_refused(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="not a readable ONNX file"):
        OnnxEncoder(bad)
    with pytest.raises(InputError, match="no such ONNX file"):
        OnnxEncoder(tmp_path / "missing.onnx")


# ---- the run's own export ---------------------------------------------------------------------------
def test_ensure_run_onnx_reexports_only_when_stale(run, report, monkeypatch):
    calls = []

    class Done:
        path = run.onnx

    def fake_export(r, out, **kw):
        calls.append(out)
        return Done
    monkeypatch.setattr(exp, "export_onnx", fake_export)
    run.onnx.unlink(missing_ok=True)
    assert ensure_run_onnx(run) == run.onnx and calls == [run.onnx]            # missing
    run.onnx.parent.mkdir(exist_ok=True)
    run.onnx.write_bytes(report.path.read_bytes())                             # made from best.pt as it is
    assert ensure_run_onnx(run) == run.onnx and len(calls) == 1                 # fresh: kept
    st = run.best.stat()
    os.utime(run.best, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))            # the checkpoint changed
    try:
        assert ensure_run_onnx(run) == run.onnx and len(calls) == 2
        run.onnx.write_bytes(b"garbage")                                       # unreadable
        ensure_run_onnx(run)
        assert len(calls) == 3
    finally:
        os.utime(run.best, ns=(st.st_atime_ns, st.st_mtime_ns))
        run.onnx.unlink(missing_ok=True)


def test_a_second_process_waits_for_the_export_in_progress_and_reuses_it(run, report, monkeypatch):
    import threading

    from engine.core.locks import FolderLock, lock_holder
    calls = []
    monkeypatch.setattr(exp, "export_onnx", lambda r, out, **kw: calls.append(out))
    run.onnx.unlink(missing_ok=True)
    run.onnx.parent.mkdir(exist_ok=True)
    lock_path = run.onnx.with_name(run.onnx.name + ".lock")
    # `with lock.acquire(...)` holds the lock once (a second acquire on another descriptor would wait
    # for itself)
    with FolderLock(lock_path, "busy").acquire(timeout=1) as held:
        assert lock_holder(lock_path) == os.getpid()
        got = []
        waiter = threading.Thread(target=lambda: got.append(ensure_run_onnx(run)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and calls == []                 # waits for the export in progress
        run.onnx.write_bytes(report.path.read_bytes())           # ... which finishes
        held.release()
    waiter.join(10)
    try:
        assert got == [run.onnx] and calls == []                 # and takes it instead of exporting again
        assert lock_holder(lock_path) is None
    finally:
        run.onnx.unlink(missing_ok=True)


# ---- CLI ---------------------------------------------------------------------------------------------
def test_cli_export(ws, run, traced, monkeypatch, tmp_path, capsys):
    reuse_trace(monkeypatch, traced)
    out = tmp_path / "cli.onnx"
    rc = cli(["--workspace", str(ws.root), "--events", "jsonl", "export", "onnx-gt", "--onnx", str(out),
              "--parity-limit", "40"])
    assert rc == 0 and out.exists()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    res = events[-1]
    assert res["type"] == "result" and res["export"]["path"] == str(out)
    assert res["export"]["size_bytes"] == out.stat().st_size
    assert res["export"]["parity"]["rows"] == 44 and res["export"]["parity"]["top10_set_share"] >= 0.99
    assert any(e["type"] == "progress" and e["stage"] == "parity" for e in events)
    rc = cli(["--workspace", str(ws.root), "export", "onnx-gt", "--onnx", str(out), "--parity-limit", "0"])
    assert rc == 2 and "--parity-limit must be >= 1" in capsys.readouterr().err
    rc = cli(["--workspace", str(ws.root), "export", "nope", "--onnx", str(out)])
    assert rc == 2 and "run 'nope' not found" in capsys.readouterr().err


def test_cli_export_prints_the_report(ws, run, traced, monkeypatch, tmp_path, capsys):
    reuse_trace(monkeypatch, traced)
    assert cli(["--workspace", str(ws.root), "-q", "export", "onnx-gt", "--parity-limit", "20"]) == 0
    text = capsys.readouterr().out
    assert "ONNX export of run onnx-gt" in text and "identical top-10 (set)" in text and "1.0000" in text
    assert run.onnx.exists()                                          # default: the run's own export
    run.onnx.unlink()


# ---- the other convolutions (a real export each) -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model,params", [
    ("gat", {"hidden": 16, "heads": 2}),
    ("graphsage", {"hidden": 16, "graph_mode": "cooc"}),           # also the co-occurrence session graph
    # graph_transformer_ffn: the Graph Transformer's convolution plus a feed-forward block of plain
    # linear layers; exported once by hand (parity 1.0), left out of the suite for its time (8 s)
])
def test_other_gnns_export(ws, tmp_path, model, params):
    fit(small_cfg(model=model, model_params=params, epochs=1), ws, run_id=f"onnx-{model}")
    run = ws.run(f"onnx-{model}")
    report = exp.export_onnx(run, tmp_path / "m.onnx", parity_limit=100)
    p = report.parity
    assert p.top10_set_share >= 0.99 and p.max_rel_error <= TOL and p.max_rel_error_encode <= TOL
    enc = OnnxEncoder(report.path)
    lr = exp.load_run(run)
    assert enc.metadata["model"] == model
    assert enc.graph_mode == lr.model.graph_mode == params.get("graph_mode", "transitions")
    builder = BatchBuilder(SessionStore(lr.data.test), lr.data.n_items, lr.model.graph_mode, lr.data.graph)
    b = builder.from_prefixes(SESSIONS[0])
    with torch.no_grad():
        assert rel(enc.scores(b), lr.model.score(b)) <= TOL
        assert rel(enc.encode(b)[0], lr.model.encode(b)[0]) <= TOL
