"""Training loop, checkpoints, resume, SIGTERM, run events, recommend and the train/eval CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.data.artifacts import load_dataset
from engine.data.batches import BatchBuilder, SessionStore
from engine.data.items import parse_item_ids
from engine.evaluation.evaluate import evaluate
from engine.inference.recommend import Recommender
from engine.models.checkpoint import load_checkpoint, rebuild_model
from engine.runs import read_events, read_run
from engine.runs.events import Epoch, RunFailed, RunStarted, Step
from engine.train.loop import fit
from engine.train.trainer import Trainer
from tests.conftest import SMALL, small_cfg, stop_after

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    return tiny_demo_ws


cfg = small_cfg


def test_fit_writes_run_folder_and_events(ws):
    final = fit(cfg(), ws)
    run = ws.run(final["run_id"]).root
    assert (run / "config.json").exists() and (run / "best.pt").exists() and (run / "last.pt").exists()
    events = read_events(run / "events.jsonl")
    types = [e.TYPE for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("epoch") == 2 and "step" in types and "checkpoint" in types
    assert all(e.run_id == final["run_id"] and e.time > 0 for e in events)
    started = events[0]
    assert isinstance(started, RunStarted)
    assert started.train_examples > 0 and started.steps_per_epoch >= 1 and started.n_params > 0
    # --loss auto (the default) resolved when the run was prepared: 256 x ~200 items fit full softmax
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["loss"] == "ce" and started.config["loss"] == "ce"
    choice = saved["loss_choice"]
    assert choice["loss"] == "ce" and choice["device"] == "cpu"
    assert choice["logits_bytes"] == 256 * started.n_items * 16        # batch x V x 4 B x 4
    epoch = next(e for e in events if isinstance(e, Epoch))
    assert set(epoch.val["metrics"]) >= {"recall@10", "ndcg@10", "mrr@10", "recall@20"}
    assert final["status"] == "completed"
    assert set(final["test"]) == {"last", "prefixes"}
    for r in final["test"].values():
        assert 0 <= r["metrics"]["recall@10"] <= 1 and r["n"] > 0
    s = read_run(ws, final["run_id"])
    assert s.status == "completed" and s.epochs_run == 2 and s.best_epoch in (1, 2)
    assert len(s.epoch_x) == 2 and len(s.losses) >= 1


def test_checkpoint_rebuilds_model_alone_and_reproduces_test_metrics(ws):
    final = fit(cfg(model="gat"), ws)
    ckpt = load_checkpoint(ws.run(final["run_id"]).root / "best.pt")
    assert ckpt["item_fingerprint"] and ckpt["n_items"] > 0 and "versions" in ckpt
    assert {"optimizer", "scheduler", "rng", "epoch", "step"} <= set(ckpt)
    model = rebuild_model(ckpt)            # no dataset needed
    data = load_dataset(ws, "demo-tiny")
    builder = BatchBuilder(SessionStore(data.test), data.n_items, model.graph_mode, data.graph)
    pop = np.concatenate([[0], data.items.train_counts])
    res = evaluate(model, builder, data.test, protocol="last", popularity=pop)
    assert res["metrics"] == pytest.approx(final["test"]["last"]["metrics"], abs=1e-9)


def test_resume_mid_epoch_gives_the_same_weights(ws):
    # one thread: with two, two uninterrupted runs of this config already differ in the last bits
    # (recency_w, emb.weight, ...: multi-threaded CPU kernels do not fix the order of float sums), so
    # this test failed outside `make test`, whose workers get one thread each; resuming must
    # reproduce the weights, it cannot make threaded sums deterministic
    full = fit(cfg(epochs=3, seed=3, num_threads=1), ws)
    stopped = fit(cfg(epochs=3, seed=3, num_threads=1), ws, stop=stop_after(5))     # mid epoch 1 or 2
    assert stopped["status"] == "stopped"
    assert read_run(ws, stopped["run_id"]).status == "stopped"
    resumed = fit(None, ws, run_id=stopped["run_id"], resume=True)
    assert resumed["status"] == "completed"
    a = load_checkpoint(ws.run(full["run_id"]).root / "last.pt")["model"]
    b = load_checkpoint(ws.run(resumed["run_id"]).root / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["test"]["last"]["metrics"] == full["test"]["last"]["metrics"]
    events = read_events(ws.run(resumed["run_id"]).root / "events.jsonl")
    assert [e.TYPE for e in events].count("run_started") == 2
    assert events[-1].TYPE == "run_finished"


@pytest.mark.parametrize("name", ["pop", "spop", "itemknn", "sknn", "sr", "stan", "vstan"])
def test_every_baseline_on_tiny_demo(ws, name):
    final = fit(cfg(model=name, model_params={}), ws)
    assert final["status"] == "completed"
    r = final["test"]["prefixes"]["metrics"]
    assert 0 <= r["mrr@10"] <= r["recall@10"] <= r["recall@20"] <= 1
    if name != "pop":   # session-aware baselines beat popularity on the planted structure
        pop_run = fit(cfg(model="pop", model_params={}), ws)
        assert r["recall@10"] > pop_run["test"]["prefixes"]["metrics"]["recall@10"]


def test_cuda_oom_is_reported_with_batch_size_and_suggestion(ws, monkeypatch, capsys):
    def oom(self, idx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
    monkeypatch.setattr(Trainer, "step", oom)
    rc = cli(["--workspace", str(ws.root), "train", "--dataset", "demo-tiny", "--model", "graph_transformer",
              "--hidden", "16", "--batch-size", "512", "--device", "cpu", "--run-id", "oom-run"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "CUDA out of memory at batch size 512" in err and "--batch-size 256" in err
    last = read_events(ws.run("oom-run").events)[-1]
    assert isinstance(last, RunFailed) and last.error_kind == "cuda_oom" and last.batch_size == 512
    assert read_run(ws, "oom-run").status == "failed"


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "nope"], "unknown model 'nope'; valid models: graphsage, gat"),
    (["train", "--batch-size", "0"], "batch_size: must be >= 1 and <= 16777216 (got 0)"),
    (["train", "--device", "tpu"], "device: expected one of auto, cpu, cuda, got 'tpu'"),
    (["train", "--dataset", "missing"], "dataset 'missing' not found"),
    (["train", "--loss", "hinge"], "loss: expected one of auto, ce, sampled, bpr, got 'hinge'"),
    (["train", "--param", "depth=3"], "has no parameter 'depth'; valid:"),
    (["eval", "no-such-run"], "run 'no-such-run' not found"),
    (["recommend", "no-such-run", "1"], "run 'no-such-run' not found"),
    (["recommend", "baseline:sknn@demo-tiny", "12x"], "item id '12x' is not a number"),
])
def test_bad_arguments_are_one_line_errors(ws, capsys, args, message):
    assert cli(["--workspace", str(ws.root), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_dataset_not_built_and_run_without_checkpoint(ws, capsys, tmp_path):
    other = Workspace.open(tmp_path / "ws2")
    assert cli(["--workspace", str(other.root), "-q", "demo", "--size", "tiny", "--no-build"]) == 0
    assert cli(["--workspace", str(other.root), "train", "--dataset", "demo-tiny"]) == 2
    assert "is not built" in capsys.readouterr().err
    run = ws.run("empty-run").root
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"run_id": "empty-run", "train": {}}))
    assert cli(["--workspace", str(ws.root), "eval", "empty-run"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_gnn_without_validation_is_refused_unless_it_is_a_fixed_epoch_refit(tmp_path, capsys):
    other = Workspace.open(tmp_path / "ws")
    assert cli(["--workspace", str(other.root), "-q", "demo", "--size", "tiny", "--val-ratio", "0"]) == 0
    assert cli(["--workspace", str(other.root), "train", "--dataset", "demo-tiny", "--hidden", "16"]) == 2
    err = capsys.readouterr().err
    assert "no validation sessions" in err and "--val-ratio" in err and "--no-early-stopping" in err
    assert not other.runs_dir.exists() or not any(other.runs_dir.iterdir())
    # a baseline has no epochs to choose: it still runs
    assert cli(["--workspace", str(other.root), "-q", "train", "--dataset", "demo-tiny", "--model", "pop"]) == 0
    # a refit trains exactly the epochs given and keeps the last one, then tests it
    assert cli(["--workspace", str(other.root), "-q", "train", "--dataset", "demo-tiny", "--hidden", "16",
                "--no-early-stopping", "--epochs", "2", "--run-id", "refit", "--batch-size", "256"]) == 0
    st = read_run(other, "refit")
    assert (st.status, st.epochs_run, st.best_epoch) == ("completed", 2, 2) and st.test["prefixes"]["recall@10"] > 0
    assert load_checkpoint(other.run("refit").best)["epoch"] == 2


def test_recommender_reports_unknown_ids_and_falls_back(ws):
    final = fit(cfg(model="graphsage", model_params={"hidden": 16}), ws)
    rec = Recommender.load(ws.run(final["run_id"]))
    data = load_dataset(ws, "demo-tiny", stages=("items", "graph"))
    known = data.items.raw_ids[:3].tolist()
    r = rec.recommend(known + [-5, 10**12], k=10)
    assert r.unknown == [-5, 10**12] and r.known == known and not r.fallback
    assert len(r.items) == 10 and r.scores == sorted(r.scores, reverse=True)
    assert r.in_session == [i in known for i in r.items]
    # a training item's popularity is its training count; a cold item (metadata only) has none
    counts = dict(zip(data.items.raw_ids.tolist(), data.items.train_counts.tolist()))
    assert all(p == counts.get(i, 0) for i, p in zip(r.items, r.popularity))
    fb = rec.recommend([10**12], k=5)
    assert fb.fallback and "popularity" in fb.source and fb.items == data.items.raw_ids[:5].tolist()
    assert parse_item_ids("1, 2 3,,4") == [1, 2, 3, 4]
    with pytest.raises(InputError, match="not a number"):
        parse_item_ids("1 two")
    base = Recommender.for_baseline(ws, "demo-tiny", "spop")
    r = base.recommend(known, k=5)
    assert r.items[:3] == sorted(known, key=lambda i: -known.index(i))[:3] or set(r.items[:3]) == set(known)


def test_sigterm_stops_cleanly_and_resume_continues(ws):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "engine", "--workspace", str(ws.root), "--events", "jsonl", "train",
           "--dataset", "demo-tiny", "--model", "graph_transformer", "--hidden", "16", "--epochs", "200",
           "--batch-size", "64", "--device", "cpu", "--run-id", "sigterm-run"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        t0 = time.time()
        while not any(isinstance(e, Step) for e in read_events(ws.run("sigterm-run").events)):
            assert time.time() - t0 < 120 and proc.poll() is None   # wait until training runs
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert rc == 0
    # stdout carries what the events file does not: here the final result
    last = json.loads(rest.strip().splitlines()[-1])["run"]
    assert last["type"] == "run_finished" and last["status"] == "stopped" and last["reason"] == "SIGTERM"
    assert ws.run("sigterm-run").last.exists()
    assert read_run(ws, "sigterm-run").status == "stopped"
    # resume for one more epoch than done so far
    done = load_checkpoint(ws.run("sigterm-run").root / "last.pt")["epoch"]
    final = fit(None, ws, run_id="sigterm-run", resume=True, epochs=done + 1)
    assert final["status"] == "completed"


def test_ablation_saves_each_variant_as_it_finishes(ws, tmp_path):
    from engine.bench import ablation
    out = tmp_path / "ablation.json"

    def log(msg: str) -> None:       # interrupt the run when the second variant starts
        if msg.startswith("GT no repeat"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        ablation.run(ws, "demo-tiny", device="cpu", epochs=1, batch_size=256, base_params=SMALL,
                     only=["1 layer", "no repeat"], log=log, out=out)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False
    assert [r["variant"] for r in partial["rows"]] == ["GT 1 layer"]
    row = partial["rows"][0]
    # chosen on validation: the test split is not read (the winner is refitted and tested once)
    assert row["epochs_run"] == 1 and 0 <= row["val_recall@20"] <= 1 and row["last_recall@20"] is None
    from engine.runs import read_run
    assert read_run(ws, row["run_id"]).test == {}
    assert json.loads((ws.run(row["run_id"]).root / "config.json").read_text())["train"]["model_params"]["layers"] == 1

    done = ablation.run(ws, "demo-tiny", device="cpu", epochs=1, batch_size=256, base_params=SMALL,
                        only=["no repeat"], log=lambda m: None, out=out)
    saved = json.loads(out.read_text())
    assert saved["complete"] is True and [r["variant"] for r in saved["rows"]] == ["GT no repeat scorer"]
    assert done["json_path"] == str(out)


def test_eval_cli_reproduces_the_runs_test_metrics_and_tables_fit_80_columns(ws, capsys, monkeypatch):
    final = fit(cfg(model="gat", epochs=1), ws)
    rid = final["run_id"]
    assert cli(["--workspace", str(ws.root), "--events", "jsonl", "eval", rid, "--protocol", "both"]) == 0
    res = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert res["type"] == "result" and res["run_id"] == rid
    for proto in ("last", "prefixes"):
        assert res["results"][proto]["metrics"] == pytest.approx(final["test"][proto]["metrics"], abs=1e-9)
    monkeypatch.setenv("COLUMNS", "80")
    for args in (["eval", rid, "--protocol", "both"], ["runs"]):
        assert cli(["--workspace", str(ws.root), *args]) == 0
        text = capsys.readouterr().out
        assert max(len(line) for line in text.splitlines()) <= 80
        assert f"{final['test']['last']['metrics']['recall@10']:.4f}" in text
        assert f"{final['test']['prefixes']['metrics']['recall@10']:.4f}" in text
    assert rid in text


def test_only_gnn_training_keeps_freed_memory(ws, monkeypatch):
    # the heap that never shrinks suits same-shaped steps, not the kNN baselines' varying arrays
    import engine.train.loop as loop
    calls = []
    monkeypatch.setattr(loop, "reuse_freed_memory", lambda: calls.append(1))
    fit(cfg(model="pop", model_params={}), ws)
    assert calls == []
    fit(cfg(epochs=1), ws)
    assert calls == [1]


def test_sigterm_interrupts_a_baseline_that_never_checks_the_stop_flag(ws, monkeypatch):
    """A baseline's fit (a hybrid choosing its weight, kNN evaluation) has no stop checks: SIGTERM
    ends it at once as interrupted instead of running on until the app kills it."""
    import engine.train.loop as loop
    from engine.train.loop import StopFlag
    real = loop.build_model

    def slow_build(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)          # what the app's Stop sends
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return real(*a, **k)
    monkeypatch.setattr(loop, "build_model", slow_build)
    stop = StopFlag()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop.install()                                     # as `sessrec train` does
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            fit(small_cfg(model="sknn", model_params={}), ws, run_id="knn-stopped", stop=stop)
        assert time.monotonic() - t0 < 15
        assert signal.getsignal(signal.SIGTERM) is not signal.default_int_handler   # the flag's again
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    # stopped before it started: no run folder is left behind (as for any run stopped that early)
    assert not ws.run("knn-stopped").exists
