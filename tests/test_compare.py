"""`sessrec compare A B`: two runs' test ranks, their metrics and a paired test, hand-checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.evaluation.compare import compare_runs
from engine.evaluation.ranks import ExampleRanks

INF = np.inf


def make_run(ws: Workspace, run_id: str, dataset: str, ranks: dict[str, list[float]], sessions=None) -> None:
    run = ws.run(run_id)
    run.root.mkdir(parents=True)
    run.config.write_text(json.dumps({"run_id": run_id, "train": {"dataset": dataset, "model": "pop"}}))
    for protocol, r in ranks.items():
        n = len(r)
        s = np.arange(n) if sessions is None else np.asarray(sessions)
        ExampleRanks(np.asarray(r, dtype=np.float64), s.astype(np.int64), np.full(n, 2, np.int64)).save(
            run.test_ranks(protocol))


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path)
    make_run(ws, "a", "d", {"last": [1, INF, 3, 12], "prefixes": [1, 2, 3, 4, 5, 6]}, sessions=None)
    make_run(ws, "b", "d", {"last": [2, 5, INF, 12], "prefixes": [2, 2, 3, 4, 5, 6]})
    return ws


def test_metrics_and_the_paired_difference_are_the_hand_computed_ones(ws):
    res = compare_runs(ws, "a", "b", ("last",), n_boot=200)
    m = res["protocols"]["last"]["metrics"]
    # recall@10: A hits 1, 3 -> 2/4; B hits 2, 5 -> 2/4. mrr@10: A (1 + 1/3) / 4, B (1/2 + 1/5) / 4
    assert m["recall@10"]["a"]["mean"] == pytest.approx(0.5) and m["recall@10"]["b"]["mean"] == pytest.approx(0.5)
    assert m["mrr@10"]["a"]["mean"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["mrr@10"]["b"]["mean"] == pytest.approx((0.5 + 0.2) / 4)
    t = m["mrr@10"]["a_minus_b"]
    assert t["diff"] == pytest.approx((1 + 1 / 3 - 0.7) / 4)
    assert (t["a_better"], t["b_better"], t["sessions"]) == (2, 1, 4)      # sessions 0, 2 vs 1; 3 ties
    assert t["lo"] <= t["diff"] <= t["hi"]
    # recall@20 adds rank 12 to both: 3/4 each, difference 0
    assert m["recall@20"]["a_minus_b"]["diff"] == pytest.approx(0.0)
    assert res["protocols"]["last"]["examples"] == 4 and res["dataset"] == "d"


def test_the_command_prints_the_table_and_json(ws, capsys):
    assert cli(["--workspace", str(ws.root), "--events", "jsonl", "compare", "a", "b", "--bootstrap", "100"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert res["type"] == "result" and set(res["compare"]["protocols"]) == {"last", "prefixes"}
    pre = res["compare"]["protocols"]["prefixes"]["metrics"]["mrr@10"]["a_minus_b"]
    assert pre["diff"] == pytest.approx((1 - 0.5) / 6)
    assert cli(["--workspace", str(ws.root), "compare", "a", "b", "--protocols", "last"]) == 0
    out = capsys.readouterr().out
    assert "A = a, B = b on d" in out and "last mrr@10" in out and "prefixes" not in out.split("(test)")[1].split("last:")[0]


def test_runs_that_cannot_be_paired_are_refused(ws, capsys):
    make_run(ws, "c", "other", {"last": [1, 2, 3, 4]})
    make_run(ws, "e", "d", {"last": [1, 2, 3]})
    make_run(ws, "f", "d", {"prefixes": [1, 2, 3, 4, 5, 6]})
    with pytest.raises(InputError, match="tested on different datasets"):
        compare_runs(ws, "a", "c")
    with pytest.raises(InputError, match="their last test examples differ"):
        compare_runs(ws, "a", "e", ("last",))
    with pytest.raises(InputError, match="run f has no per-example test ranks for the last protocol"):
        compare_runs(ws, "a", "f", ("last",))
    with pytest.raises(InputError, match="a twice"):
        compare_runs(ws, "a", "a")
    assert cli(["--workspace", str(ws.root), "compare", "a", "b", "--protocols", "first"]) == 2
    assert "--protocols 'first'" in capsys.readouterr().err
