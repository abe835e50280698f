"""The papers' protocol: the refit split, the refit twin of a dataset, `train --refit` /
`--refit-from`, the runs that record it, and the repeat / new strata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cli import main as cli
from engine.core.config import DataConfig
from engine.core.errors import InputError
from engine.data.manifest import Dataset
from engine.data.refit import refit_dataset
from engine.data.sessions import Sessions
from engine.data.split import DAY_MS, split_sessions
from engine.evaluation.strata import repeat_mask
from engine.runs import read_run
from tests.test_split import make


def test_refit_split_joins_validation_and_its_gap_to_train_and_keeps_test():
    D = DAY_MS
    starts = [d * D for d in range(20)] + [8 * D - 1, 13 * D - 1, 15 * D - 1]
    cfg = DataConfig(train_ratio=0.48, val_ratio=0.31, blackout_days=2)
    parts, _ = split_sessions(make(starts), cfg)
    refit, st = split_sessions(make(starts), DataConfig(train_ratio=0.48, val_ratio=0.31, blackout_days=2,
                                                        refit=True))
    # the same cuts (t1 = 10D, t2 = 15D): train is every start < t2 - gap = 13D, the 8D/9D gap included
    assert refit["train"].start.tolist() == sorted([d * D for d in range(13)] + [8 * D - 1, 13 * D - 1])
    assert len(refit["val"]) == 0
    assert refit["test"].start.tolist() == parts["test"].start.tolist()
    assert st["blackout_dropped_train_val"] == 0 and st["blackout_dropped_val_test"] == 3


def test_refit_split_of_a_published_test_file_trains_on_the_whole_train_file():
    D = DAY_MS
    train, test = make([d * D for d in range(10)]), make([20 * D, 21 * D])
    parts, _ = split_sessions(train, DataConfig(split_mode="test_file", val_ratio=0.2, blackout_days=0, refit=True),
                              test_sessions=test)
    assert len(parts["train"]) == 10 and len(parts["val"]) == 0 and len(parts["test"]) == 2


def test_repeat_mask_by_hand():
    s = Sessions.from_lists([[5, 6, 5, 7], [8, 8], [1, 2, 3]], np.int64)
    session = np.array([0, 0, 0, 1, 2, 2])
    prefix = np.array([1, 2, 3, 1, 1, 2])
    # targets 6 (prefix [5]), 5 ([5, 6]: repeat), 7 ([5, 6, 5]), 8 ([8]: repeat), 2 ([1]), 3 ([1, 2])
    assert repeat_mask(s, session, prefix).tolist() == [False, True, False, True, False, False]


def test_the_twin_holds_the_same_test_and_train_plus_validation(tiny_demo_ws):
    ws = tiny_demo_ws
    ds = Dataset.load(ws, "demo-tiny")
    twin = refit_dataset(ds)
    assert twin.name == "demo-tiny.refit" and twin.config.refit and twin.source["refit_of"] == "demo-tiny"
    raw = {n: {split: Sessions.read(ws.dataset(n).split_sessions(split)) for split in ("train", "val", "test")}
           for n in ("demo-tiny", "demo-tiny.refit")}
    a, b = raw["demo-tiny"], raw["demo-tiny.refit"]
    assert np.array_equal(a["test"].items, b["test"].items) and np.array_equal(a["test"].offsets, b["test"].offsets)
    assert len(b["val"]) == 0
    # every train and validation session of the original trains the twin (plus the gap between them)
    assert len(b["train"]) >= len(a["train"]) + len(a["val"])
    assert set(np.unique(b["train"].items)) >= set(np.unique(a["val"].items))
    assert refit_dataset(twin) is twin                    # a twin's twin is itself
    assert Dataset.load(ws, "demo-tiny.refit").stage_record("encodings")["status"] == "done"


def test_train_refit_selects_on_validation_then_refits_and_tests_once(tiny_demo_ws, capsys):
    ws = tiny_demo_ws
    args = ["--workspace", str(ws.root), "--events", "jsonl", "train", "--dataset", "demo-tiny",
            "--model", "graph_transformer", "--hidden", "16", "--heads", "2", "--epochs", "3", "--patience", "1",
            "--warmup-steps", "2", "--batch-size", "256", "--device", "cpu", "--refit", "--run-id", "gt-refit"]
    capsys.readouterr()
    assert cli(args) == 0
    result = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if '"result"' in ln][-1]["run"]
    sel_id = result["selection"]["run_id"]
    sel, refit = read_run(ws, sel_id), read_run(ws, "gt-refit")
    assert sel.dataset == "demo-tiny" and sel.test == {} and sel.best_epoch >= 1     # test never read
    assert refit.dataset == "demo-tiny.refit" and refit.refit_of == sel_id
    assert refit.config["epochs"] == sel.best_epoch and refit.config["schedule_epochs"] == 3
    assert refit.config["early_stopping"] is False and refit.epochs_run == sel.best_epoch
    assert set(refit.test) == {"last", "prefixes"} and refit.summary()["refit_of"] == sel_id
    # the runs table names the selection run
    capsys.readouterr()
    assert cli(["--workspace", str(ws.root), "runs"]) == 0
    table = capsys.readouterr().out
    assert "refit of" in table and "".join(table.split()).count("".join(sel_id.split())) >= 1
    listed = [r for r in _runs_json(ws, capsys) if r["run_id"] == "gt-refit"]
    assert listed and listed[0]["refit_of"] == sel_id
    # a baseline refits the same way: a selection run (validation only), then a fit on the twin
    assert cli(["--workspace", str(ws.root), "-q", "train", "--dataset", "demo-tiny", "--model", "spop",
                "--refit", "--run-id", "spop-refit"]) == 0
    spop = read_run(ws, "spop-refit")
    assert spop.dataset == "demo-tiny.refit" and spop.refit_of and read_run(ws, spop.refit_of).test == {}
    # the refit GNN and the refit baseline compared on the same test examples, with the strata
    from engine.evaluation.compare import compare_runs, render
    res = compare_runs(ws, "gt-refit", "spop-refit", ("prefixes",), n_boot=100)
    st = res["protocols"]["prefixes"]["strata"]
    assert st["a"]["repeat"]["n"] + st["a"]["new"]["n"] == res["protocols"]["prefixes"]["examples"]
    assert st["b"]["repeat"]["recall@20"] == pytest.approx(1.0)     # S-POP lists every session item
    assert res["refit_of"] == [sel_id, spop.refit_of]
    assert "is a refit of" in str(render(res).caption)
    # --refit-from refits a finished selection run again, with its config
    assert cli(["--workspace", str(ws.root), "-q", "train", "--refit-from", sel_id, "--run-id", "gt-refit-2"]) == 0
    again = read_run(ws, "gt-refit-2")
    assert again.refit_of == sel_id and again.config["epochs"] == sel.best_epoch


def test_no_test_selection_runs_then_refit_from_the_better_one(tiny_demo_ws, capsys):
    """A learning rate chosen on validation: two `--no-test` runs (test never read), the one with the
    better validation Recall@10 refitted with `--refit-from`, which tests once."""
    ws, root = tiny_demo_ws, str(tiny_demo_ws.root)
    for lr in ("1e-3", "1e-2"):
        assert cli(["--workspace", root, "-q", "train", "--dataset", "demo-tiny", "--model", "graph_transformer",
                    "--hidden", "16", "--heads", "2", "--epochs", "2", "--patience", "1", "--warmup-steps", "2",
                    "--batch-size", "256", "--device", "cpu", "--lr", lr, "--no-test", "--run-id", f"sel-{lr}"]) == 0
    sel = {lr: read_run(ws, f"sel-{lr}") for lr in ("1e-3", "1e-2")}
    for st in sel.values():
        assert st.test == {} and st.best_epoch >= 1 and st.status in ("completed", "early_stopped")
        assert not list(ws.run(st.run_id).root.glob("test_ranks-*"))      # nothing of the test split written
    # extended with --resume --no-test, a selection run stays validation-only
    assert cli(["--workspace", root, "-q", "train", "--resume", "sel-1e-3", "--epochs", "3", "--no-test"]) == 0
    sel["1e-3"] = read_run(ws, "sel-1e-3")
    assert sel["1e-3"].epochs_run == 3 and sel["1e-3"].test == {}
    best = max(sel, key=lambda lr: sel[lr].best_value)
    assert cli(["--workspace", root, "-q", "train", "--refit-from", f"sel-{best}", "--run-id", "lr-refit"]) == 0
    refit = read_run(ws, "lr-refit")
    assert refit.refit_of == f"sel-{best}" and refit.config["lr"] == float(best)
    assert set(refit.test) == {"last", "prefixes"}
    capsys.readouterr()
    assert cli(["--workspace", root, "train", "--dataset", "demo-tiny", "--refit", "--no-test"]) == 2
    assert "--no-test with --refit" in capsys.readouterr().err


def _runs_json(ws, capsys) -> list[dict]:
    capsys.readouterr()
    assert cli(["--workspace", str(ws.root), "--events", "jsonl", "runs"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if '"result"' in ln][-1]
    return json.loads(line)["runs"]


@pytest.mark.parametrize("extra, message", [
    (["--nproc", "2"], "--refit-from RUN"),
    (["--resume", "x"], "--resume continues"),
])
def test_refit_refusals(tiny_demo_ws, capsys, extra, message):
    code = cli(["--workspace", str(tiny_demo_ws.root), "train", "--dataset", "demo-tiny", "--refit", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_refit_from_refuses_options_and_unfinished_runs(tiny_demo_ws, capsys):
    root = str(tiny_demo_ws.root)
    assert cli(["--workspace", root, "train", "--refit-from", "nope", "--model", "gat"]) == 2
    assert "takes the run's own config" in capsys.readouterr().err
    assert cli(["--workspace", root, "train", "--refit-from", "nope"]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_dataset_without_validation_cannot_be_refitted(tiny_demo_ws):
    ws = tiny_demo_ws
    src = Dataset.load(ws, "demo-tiny")
    from dataclasses import replace
    ds = Dataset.create(ws, "novalid", src.source_file("path"), replace(src.config, val_ratio=0.0))
    with pytest.raises(InputError, match="no validation split"):
        refit_dataset(ds, build_it=False)
