"""`sessrec bench quality` end to end on the tiny demo: intervals, seeds, the paired test, reuse."""

import json
import math

import numpy as np
import pytest

from engine.bench import quality as bq
from engine.core.errors import InputError

MODELS = ["pop", "sknn", "graph_transformer"]
HYBRID = "hybrid"


def _bench(root, out):
    from engine.cli import main as cli
    args = ["--workspace", str(root), "-q", "bench", "quality", "--datasets", "demo-tiny",
            "--models", ",".join(MODELS), "--seeds", "0,1", "--epochs", "1", "--device", "cpu",
            "--param", "hidden=16", "--param", "graph_transformer.heads=2", "--param", "sknn.k=50",
            "--bootstrap", "200", "--out", str(out)]
    assert cli(args) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("qbench")
    first = _bench(root / "ws", root / "first.json")
    again = _bench(root / "ws", root / "again.json")
    return root / "ws", first, again


def test_rows_have_intervals_around_the_estimates_and_seed_spread(bench):
    _, res, _ = bench
    rows = {r["model"]: r for r in res["rows"]}
    assert list(rows) == [*MODELS, HYBRID, "oracle (generator)"]
    assert res["protocols"] == ["last", "prefixes"] and res["bootstrap"]["resamples"] == 200
    for model in MODELS:
        r = rows[model]
        for p in res["protocols"]:
            t = r["test"][p]
            assert t["n"] > 0 and 0 < t["sessions"] <= t["n"]
            assert list(t["metrics"]) == list(bq.METRICS)
            for m, s in t["metrics"].items():
                assert s["lo"] <= s["mean"] <= s["hi"], (model, p, m, s)
                assert s["mean"] == pytest.approx(np.mean(s["per_seed"]), abs=2e-6)
    for base in ("pop", "sknn"):                    # deterministic: one run, no spread
        assert rows[base]["seeds"] == [0] and len(rows[base]["run_ids"]) == 1
        assert rows[base]["test"]["last"]["metrics"]["recall@10"]["std"] is None
    gnn = rows["graph_transformer"]
    assert gnn["seeds"] == [0, 1] and len(set(gnn["run_ids"])) == 2
    s = gnn["test"]["prefixes"]["metrics"]["recall@20"]
    a, b = s["per_seed"]
    assert s["std"] == pytest.approx(abs(a - b) / math.sqrt(2), abs=2e-6)   # sample std of two values
    assert gnn["seconds"]["mean"] > 0 and gnn["seconds"]["std"] is not None
    assert gnn["train_seconds"]["mean"] > 0 and rows["sknn"]["train_seconds"]["mean"] is None


def test_paired_test_of_the_best_gnn_and_baseline(bench):
    _, res, _ = bench
    rows = {r["model"]: r for r in res["rows"]}
    best_base = max(("pop", "sknn"), key=lambda m: rows[m]["val_recall@10"]["mean"])
    assert best_base == "sknn"
    assert [v["protocol"] for v in res["verdicts"]] == ["last", "prefixes"]
    for v in res["verdicts"]:
        assert (v["best_gnn"], v["best_baseline"]) == ("graph_transformer", best_base)
        for m, t in v["paired"].items():
            assert t["lo"] <= t["diff"] <= t["hi"] and 0 < t["p_value"] <= 1 and 0 < t["p_sign"] <= 1
            gm, bm = (rows[x]["test"][v["protocol"]]["metrics"][m]["mean"] for x in ("graph_transformer", best_base))
            assert t["diff"] == pytest.approx(gm - bm, abs=5e-6)        # paired on the same examples
            assert t["sessions"] == rows[best_base]["test"][v["protocol"]]["sessions"]
        assert 0 < v["gnn_share_of_oracle"] and 0 < v["gnn_share_of_oracle_known"]
        gk = rows["graph_transformer"]["test"][v["protocol"]]["known_targets"]["recall@10"]
        assert v["gnn_share_of_oracle_known"] == pytest.approx(gk / v["oracle_known_recall@10"], abs=1e-4)
        # the count learner (the oracle's law, successors and popularity counted in train) is reported beside
        cl = v["count_learner_known_recall@10"]
        assert 0 < cl and v["count_learner_share_of_oracle_known"] == pytest.approx(cl / v["oracle_known_recall@10"],
                                                                                   abs=1e-4)


def test_hybrid_row_mixes_each_seeds_gnn_run_with_the_best_baseline_run(bench):
    ws_root, res, _ = bench
    from engine.core.workspace import Workspace
    ws = Workspace.open(ws_root)
    rows = {r["model"]: r for r in res["rows"]}
    hyb, gnn = rows[HYBRID], rows["graph_transformer"]
    assert hyb["kind"] == "hybrid" and hyb["seeds"] == [0, 1] and hyb["mixes"] == ["graph_transformer", "sknn"]
    for rid, gnn_rid in zip(hyb["run_ids"], gnn["run_ids"]):
        params = json.loads(ws.run(rid).config.read_text())["train"]["model_params"]
        assert (params["gnn_run"], params["baseline_run"]) == (gnn_rid, rows["sknn"]["run_ids"][0])
    for v in res["verdicts"]:
        assert v["hybrid"] == "hybrid (graph_transformer + sknn)"
        for m, t in v["hybrid_paired"].items():
            hm, bm = (rows[x]["test"][v["protocol"]]["metrics"][m]["mean"] for x in (HYBRID, "sknn"))
            assert t["diff"] == pytest.approx(hm - bm, abs=5e-6)


def test_runs_keep_their_test_ranks_params_apply_and_a_rerun_reuses_them(bench):
    from engine.core.metrics import metrics_from_ranks
    from engine.evaluation.ranks import ExampleRanks
    from engine.runs.events import RunFinished, read_events
    ws_root, res, again = bench
    from engine.core.workspace import Workspace
    ws = Workspace.open(ws_root)
    rows = {r["model"]: r for r in res["rows"]}
    sknn = ws.run(rows["sknn"]["run_ids"][0])
    assert json.loads(sknn.config.read_text())["train"]["model_params"]["k"] == 50
    gnn = ws.run(rows["graph_transformer"]["run_ids"][1])
    params = json.loads(gnn.config.read_text())["train"]["model_params"]
    assert (params["hidden"], params["heads"]) == (16, 2)
    fin = next(e for e in read_events(gnn.events) if isinstance(e, RunFinished))
    for p in ("last", "prefixes"):
        ranks = ExampleRanks.load(gnn.test_ranks(p))
        assert len(ranks) == fin.test[p]["n"]
        assert metrics_from_ranks(ranks.ranks) == pytest.approx(fin.test[p]["metrics"])
    # the second benchmark trained nothing and reports the same numbers
    assert all(all(r["reused"]) for r in again["rows"] if "reused" in r)
    assert [r["run_ids"] for r in again["rows"] if "run_ids" in r] == [r["run_ids"] for r in res["rows"] if "run_ids" in r]
    assert [r["test"] for r in again["rows"]] == [r["test"] for r in res["rows"]]


def test_table_shows_intervals_spread_and_the_paired_test(bench):
    from rich.console import Console
    _, res, _ = bench
    con = Console(width=80, record=True)
    con.print(bq.render(res))
    text = con.export_text()
    assert "demo-tiny, last" in text and "demo-tiny, prefixes" in text
    gnn_line = next(line for line in text.splitlines() if line.strip().startswith("graph_transformer "))
    assert "±" in gnn_line
    assert "[" in text and "paired over test sessions" in text
    assert max(map(len, text.splitlines())) <= 80


def test_params_per_model_and_for_every_gnn():
    p = bq.parse_params(["hidden=128", "sknn.k=200", "graph_transformer.hidden=256"])
    assert p.for_model("graph_transformer") == {"hidden": "256"}      # the model's own value wins
    assert p.for_model("gat") == {"hidden": "128"}
    assert p.for_model("sknn") == {"k": "200"} and p.for_model("pop") == {}
    with pytest.raises(InputError, match="unknown model 'nope'"):
        bq.parse_params(["nope.k=1"])
    with pytest.raises(InputError, match="KEY=VALUE"):
        bq.parse_params(["hidden"])


def test_params_file(tmp_path):
    f = tmp_path / "best.json"
    f.write_text(json.dumps({"sknn": {"k": 100}, "graph_transformer": {"layers": 3}}))
    p = bq.parse_params(["sknn.k=20"], f)
    assert p.for_model("sknn") == {"k": "20"} and p.for_model("graph_transformer") == {"layers": 3}
    f.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected an object"):
        bq.parse_params([], f)


def test_published_rows_and_srgnn_datasets(tmp_path, monkeypatch):
    class NoOracle:
        def stage_record(self, stage):
            return None
    rows = bq._reference_rows("diginetica", NoOracle(), ["last", "prefixes"])
    sr = next(r for r in rows if r["model"] == "SR-GNN (published)")
    assert sr["kind"] == "published" and list(sr["test"]) == ["prefixes"]
    assert sr["test"]["prefixes"]["metrics"]["recall@20"]["mean"] == pytest.approx(0.5073)
    assert sr["test"]["prefixes"]["metrics"]["mrr@20"]["mean"] == pytest.approx(0.1759)
    assert bq._reference_rows("diginetica", NoOracle(), ["last"]) == []
    # without the srgnn format the datasets say what is missing
    import sys
    monkeypatch.setitem(sys.modules, "engine.data.srgnn", None)
    (tmp_path / "srgnn" / "diginetica").mkdir(parents=True)
    from engine.core.workspace import Workspace
    with pytest.raises(InputError, match="srgnn data format"):
        bq.prepare(Workspace.open(tmp_path / "ws"), "diginetica", tmp_path)


def test_refit_protocol_rows_strata_and_reuse(bench, tmp_path):
    """--refit: each model's selection run (validation only) chose what its refit on the twin
    trained; test results come from the refits; the strata split every example; a rerun reuses all."""
    from engine.cli import main as cli
    from engine.runs import read_run
    ws_root = bench[0]
    args = ["--workspace", str(ws_root), "-q", "bench", "quality", "--datasets", "demo-tiny", "--models",
            "spop,graph_transformer", "--seeds", "0", "--epochs", "2", "--device", "cpu", "--param", "hidden=16",
            "--param", "graph_transformer.heads=2", "--bootstrap", "100", "--refit", "--protocols", "prefixes"]
    assert cli([*args, "--out", str(tmp_path / "r1.json")]) == 0
    res = json.loads((tmp_path / "r1.json").read_text())
    assert res["refit"] is True and not any(r["kind"] == "hybrid" for r in res["rows"])
    rows = {r["model"]: r for r in res["rows"] if r["kind"] in ("gnn", "baseline")}
    from engine.core.workspace import Workspace
    ws = Workspace(ws_root)
    for model, row in rows.items():
        refit, sel = read_run(ws, row["run_ids"][0]), read_run(ws, row["refit_of"][0])
        assert refit.dataset == sel.dataset + ".refit" and refit.refit_of == sel.run_id and sel.test == {}
        assert row["best_epoch"] == [sel.best_epoch]
        assert row["val_recall@10"]["mean"] == pytest.approx(sel.best_val["recall@10"], abs=1e-6)  # rounded
        st = row["test"]["prefixes"]["strata"]
        assert st["repeat"]["n"] + st["new"]["n"] == row["test"]["prefixes"]["n"]
        if model == "graph_transformer":
            assert refit.config["epochs"] == sel.best_epoch
    assert rows["spop"]["test"]["prefixes"]["strata"]["repeat"]["recall@20"] == pytest.approx(1.0)
    v = next(v for v in res["verdicts"] if v["protocol"] == "prefixes")
    assert v["repeat_vs_spop"]["recall@20"]["spop"] == pytest.approx(1.0)
    assert cli([*args, "--out", str(tmp_path / "r2.json")]) == 0
    again = json.loads((tmp_path / "r2.json").read_text())
    assert all(all(r["reused"]) for r in again["rows"] if r["kind"] in ("gnn", "baseline"))
