"""Hybrid: a trained GNN mixed with a baseline, the share chosen on validation."""

from __future__ import annotations

import json

import pytest
import torch

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.data.artifacts import load_dataset
from engine.models.checkpoint import load_checkpoint, rebuild_model
from engine.models.hybrid import WEIGHT_GRID, Hybrid
from engine.models.registry import build_model, get_spec
from engine.runs import read_run
from engine.train.loop import fit
from tests.conftest import small_cfg


def test_mix_is_a_weighted_sum_of_the_two_distributions():
    g = torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    p = Hybrid.mix(g, b, 0.25).exp()
    # (1 - 0.25) * [0, .5, .5, 0] + 0.25 * [0, 1, 0, 0] = [0, .625, .375, 0]; padding stays -inf
    assert torch.allclose(p, torch.tensor([[0.0, 0.625, 0.375, 0.0]], dtype=torch.float64))
    assert Hybrid.mix(g, b, 0.25)[0, 0] == float("-inf")
    assert 0.0 in WEIGHT_GRID and 1.0 in WEIGHT_GRID


@pytest.fixture(scope="module")
def trained(tiny_demo_ws):
    ws = tiny_demo_ws
    fit(small_cfg(epochs=1), ws, run_id="hyb-gnn")
    fit(small_cfg(model="sknn", model_params={"k": 50}), ws, run_id="hyb-sknn")
    return ws


def test_hybrid_ends_rank_like_its_parts(trained):
    ws = trained
    data = load_dataset(ws, "demo-tiny", stages=get_spec("hybrid").stages())
    only_gnn = build_model("hybrid", {"gnn_run": "hyb-gnn", "weight": 0.0}, data).eval()
    only_base = build_model("hybrid", {"gnn_run": "hyb-gnn", "baseline_run": "hyb-sknn", "weight": 1.0}, data).eval()
    gnn, base = only_gnn.gnn, only_base.baseline
    from engine.data.batches import BatchBuilder, SessionStore, make_examples
    builder = BatchBuilder(SessionStore(data.test, "cpu"), data.n_items, gnn.graph_mode, data.graph)
    batch = builder(make_examples(data.test, "last")[:32])
    with torch.no_grad():
        # weight 0: the GNN's order; weight 1: the baseline's (both monotone transforms of the scores)
        assert torch.equal(only_gnn.score(batch)[:, 1:].argsort(dim=1, descending=True, stable=True),
                           gnn.score(batch)[:, 1:].double().softmax(1).argsort(dim=1, descending=True, stable=True))
        assert torch.equal(only_base.score(batch)[:, 1:].argsort(dim=1, descending=True, stable=True),
                           base.score(batch)[:, 1:].argsort(dim=1, descending=True, stable=True))
    assert base.k == 50                                  # the baseline run's (tuned) parameters


def test_hybrid_run_chooses_the_weight_on_validation_and_its_checkpoint_keeps_it(trained, capsys):
    ws = trained
    assert cli(["--workspace", str(ws.root), "train", "--dataset", "demo-tiny", "--model", "hybrid",
                "--gnn-run", "hyb-gnn", "--baseline-run", "hyb-sknn", "--run-id", "hyb"]) == 0
    assert "chosen on validation" in capsys.readouterr().err         # the log goes to stderr
    st = read_run(ws, "hyb")
    assert st.status == "completed" and st.kind == "hybrid" and st.test
    ckpt = load_checkpoint(ws.run("hyb").best)
    w = ckpt["config"]["model_params"]["weight"]
    assert w in WEIGHT_GRID
    data = load_dataset(ws, "demo-tiny", stages=get_spec("hybrid").stages())
    rebuilt = rebuild_model(ckpt, data)
    assert rebuilt.weight == w and rebuilt.fitted_params == {}   # rebuilt with the weight, not refitted
    assert json.loads(ws.run("hyb").config.read_text())["kind"] == "hybrid"


def test_hybrid_errors_name_the_run_and_what_is_wrong(trained, capsys):
    ws = trained
    data = load_dataset(ws, "demo-tiny", stages=get_spec("hybrid").stages())
    with pytest.raises(InputError, match="needs gnn_run"):
        build_model("hybrid", {}, data)
    with pytest.raises(InputError, match="'nope' not found"):
        build_model("hybrid", {"gnn_run": "nope"}, data)
    with pytest.raises(InputError, match="not a GNN run"):
        build_model("hybrid", {"gnn_run": "hyb-sknn"}, data)
    with pytest.raises(InputError, match="is not a baseline"):
        build_model("hybrid", {"gnn_run": "hyb-gnn", "baseline": "graph_transformer", "weight": 0.5}, data)
    with pytest.raises(InputError, match="select_metric"):
        build_model("hybrid", {"gnn_run": "hyb-gnn", "select_metric": "auc"}, data)
