"""The serving benchmarks on the tiny demo: a real server, a separate load process, the table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.bench import search as bsearch
from engine.bench import serve as bserve
from engine.train.loop import fit
from tests.conftest import small_cfg


@pytest.fixture(scope="module")
def run_id(tiny_demo_ws):
    return fit(small_cfg(epochs=1), tiny_demo_ws, run_id="bench-serve")["run_id"]


def test_bench_serve_measures_every_level_without_errors(tiny_demo_ws, run_id, tmp_path):
    res = bserve.run(tiny_demo_ws, run_id=run_id, runtimes=("torch",), levels=(1, 4), duration=1.0,
                     search="exact", log=lambda m: None, out=tmp_path / "serve.json")
    assert [r["concurrency"] for r in res["rows"]] == [1, 4] and res["dataset"] == "demo-tiny"
    for r in res["rows"]:
        # 199 trained items and the one metadata item training never saw (scored from its features)
        assert r["errors"] == 0 and r["requests"] > 5 and r["catalogue"] == 200
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] and r["rps"] > 0
    assert (tmp_path / "serve.json").exists()
    assert "req/s" in str(bserve.render(res).columns[4].header)
    sessions = bserve.bench_sessions(tiny_demo_ws, "demo-tiny", n=20)
    assert len(sessions) == 20 and all(len(s) == bserve.SESSION_ITEMS for s in sessions)


def test_search_bench_calibrates_the_index_on_a_table(tmp_path):
    both = bsearch._clustered(3201, 32)
    table, queries = both[:3001].copy(), both[3001:]
    table[0] = 0
    row = bsearch.measure_table("t", table, queries)
    assert row["items"] == 3000 and row["agreement@10"] >= 0.99 and 64 <= row["candidates"] <= 3000
    assert row["codes"] == 16 and min(row["exact_fp32_ms"], row["pq_ms"], row["pq_build_s"]) > 0
    exact = bsearch._exact_top(torch.from_numpy(table), torch.from_numpy(queries), 10)
    assert not (exact.numpy() == 0).any()          # the padding row is never a result
    assert np.isfinite(row["exact_bf16_ms"])


def test_the_default_dataset_is_generated_and_built_once(tmp_path):
    from engine.core.errors import InputError
    from engine.core.workspace import Workspace
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="dataset 'mine' not found: build it first"):
        bserve.ensure_dataset(ws, "mine", log=lambda m: None)
    said = []
    bserve.ensure_dataset(ws, "bench-demo-tiny", log=said.append)
    assert ws.dataset("bench-demo-tiny").items.exists() and any("generating the tiny demo" in m for m in said)
    said.clear()
    bserve.ensure_dataset(ws, "bench-demo-tiny", log=said.append)          # cached: not generated again
    assert not any("generating" in m for m in said)
    assert bserve.DEFAULT_DATASET == "bench-demo-wide"
    # the default run trains in a child process, once
    assert bserve.train_default_run(ws, "bench-demo-tiny", log=said.append) == "bench-serve-bench-demo-tiny"
    cfg = json.loads(ws.run("bench-serve-bench-demo-tiny").config.read_text())["train"]
    assert (cfg["model"], cfg["model_params"]["hidden"], cfg["epochs"], cfg["loss"]) == \
        ("graph_transformer", 256, 1, "sampled")
    said.clear()
    bserve.train_default_run(ws, "bench-demo-tiny", log=said.append)
    assert said == []


def test_a_result_saved_to_a_folder_gets_its_default_name_there(tmp_path, monkeypatch):
    from engine.bench.measure import save_result
    monkeypatch.chdir(tmp_path)
    assert save_result("ab-demo", {"x": 1}, tmp_path / "r.json") == tmp_path / "r.json"
    (tmp_path / "out").mkdir()
    path = save_result("ab-demo", {"x": 2}, tmp_path / "out")
    assert path.parent == tmp_path / "out" and path.name.startswith("ab-demo-") and path.suffix == ".json"
    assert json.loads(path.read_text()) == {"x": 2}
    default = save_result("ab-demo", {"x": 3})
    assert default.parts[:2] == ("bench", "results") and json.loads((tmp_path / default).read_text()) == {"x": 3}
