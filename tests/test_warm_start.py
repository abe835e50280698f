"""New data: the demo in time chunks, `data append`, the archived item index that keeps older runs
servable, and `train --warm-start` mapping an older run's item vectors onto the new index."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.data.artifacts import load_dataset
from engine.data.items import ItemIndex
from engine.data.manifest import Dataset
from engine.inference.recommend import Recommender
from engine.models.checkpoint import load_checkpoint, load_run
from engine.models.registry import build_model
from engine.train.warm_start import warm_start
from tests.conftest import chunked_demo_with_run

TINY_EVENTS = 4527            # the tiny demo, seed 0, in one piece


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return chunked_demo_with_run(tmp_path_factory.mktemp("warm"), epochs=1)


def test_the_demo_in_two_time_chunks(ws):
    d = ws.dataset("demo-tiny")
    one = pacsv.read_csv(d.demo_events)
    two = pacsv.read_csv(d.demo_chunk(2))
    assert one.num_rows + two.num_rows == TINY_EVENTS
    assert one.column_names == ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    # whole sessions: a visitor's events in chunk 2 start more than 30 min after its events in chunk 1
    t1, t2 = one.column("timestamp").to_numpy(), two.column("timestamp").to_numpy()
    assert np.median(t2) > t1.max() - 86_400_000 * 7 and t2.min() > t1.min()
    assert Dataset.load(ws, "demo-tiny").source["demo"] == {"size": "tiny", "seed": 0, "chunks": 2}


def test_append_rebuilds_keeps_the_old_index_and_is_idempotent(ws, capsys):
    before = ItemIndex.read(ws.dataset("demo-tiny").items)
    chunk = str(ws.dataset("demo-tiny").demo_chunk(2))
    assert cli(["--workspace", str(ws.root), "-q", "data", "append", "demo-tiny", chunk]) == 0
    ds = Dataset.load(ws, "demo-tiny")
    assert ds.stage_record("ingest")["stats"]["events"] == TINY_EVENTS
    assert [c["format"] for c in ds.source["chunks"]] == ["retailrocket"]
    after = ItemIndex.read(ws.dataset("demo-tiny").items)
    assert after.n_items > before.n_items
    assert ws.dataset("demo-tiny").item_archive(before.fingerprint()).exists()
    assert cli(["--workspace", str(ws.root), "data", "append", "demo-tiny", chunk]) == 0   # again: nothing new
    assert "already has" in capsys.readouterr().out and len(Dataset.load(ws, "demo-tiny").source["chunks"]) == 1
    assert cli(["--workspace", str(ws.root), "data", "append", "demo-tiny", str(ws.dataset("demo-tiny").demo_events)]) == 2
    assert "the dataset's own log" in capsys.readouterr().err


def test_a_run_trained_before_the_rebuild_is_served_through_its_own_index(ws):
    ckpt = load_checkpoint(ws.run("old").best)
    lr = load_run(ws.run("old"))
    assert lr.data.items.fingerprint() == ckpt["item_fingerprint"] != ItemIndex.read(ws.dataset("demo-tiny").items).fingerprint()
    now = load_dataset(ws, "demo-tiny", stages=("items",))
    assert len(lr.data.val) == len(now.val)                   # today's sessions ...
    raw = lr.data.items.decode(lr.data.val.items[lr.data.val.items > 0])
    assert np.isin(raw, now.items.raw_ids).all()              # ... seen through the old vocabulary
    rec = Recommender.for_target(ws, "old")
    assert len(rec.recommend([int(lr.data.items.raw_ids[0])], k=5).items) == 5
    with pytest.raises(InputError, match="not kept"):
        load_dataset(ws, "demo-tiny", stages=("items",), item_fingerprint="0" * 16)


def test_warm_start_maps_item_vectors_by_raw_id(ws):
    old_ckpt = load_checkpoint(ws.run("old").best)
    old_items = load_run(ws.run("old")).data.items
    from engine.core.config import TrainConfig
    from engine.data.item_meta import FeatureSpec
    from engine.models.registry import get_spec
    cfg = TrainConfig.from_dict(old_ckpt["config"])
    data = load_dataset(ws, "demo-tiny", stages=get_spec(cfg.model).stages(cfg.model_params))
    data.use_feature_spec(FeatureSpec.from_dict(old_ckpt["feature_spec"]))   # as fit does for a warm start
    torch.manual_seed(1)
    model = build_model(cfg.model, cfg.model_params, data)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    info = warm_start(model, old_ckpt["model"], old_items, data.items, "old")   # no NewItemVectors: fresh
    new_state, old_state = model.state_dict(), old_ckpt["model"]
    known_raw = [int(r) for r in data.items.raw_ids if r in set(old_items.raw_ids.tolist())]
    assert info.known_items == len(known_raw) and info.new_items == data.n_items - len(known_raw) > 0
    for raw in known_raw[:20] + known_raw[-5:]:               # the same vector under its new row
        j, i = int(data.items.encode(np.array([raw]))[0]), int(old_items.encode(np.array([raw]))[0])
        assert torch.equal(new_state["emb.weight"][j], old_state["emb.weight"][i])
    for raw in set(data.items.raw_ids.tolist()) - set(known_raw):      # new items: the fresh initialisation
        j = int(data.items.encode(np.array([raw]))[0])
        assert torch.equal(new_state["emb.weight"][j], fresh["emb.weight"][j])
    assert torch.equal(new_state["pe"], fresh["pe"])          # the new dataset's encodings
    assert torch.equal(new_state["feat_cat"], fresh["feat_cat"])   # ... and item feature ids
    assert torch.equal(new_state["readout.w1.weight"], old_state["readout.w1.weight"])
    assert torch.equal(new_state["cat_emb.weight"], old_state["cat_emb.weight"])
    assert info.copied == len(new_state) - 4                  # all but the item table, PE and feature ids


def test_train_warm_start_takes_the_older_runs_model(ws, capsys):
    assert cli(["--workspace", str(ws.root), "train", "--warm-start", "old", "--model", "gat"]) == 2
    assert "leave out --model" in capsys.readouterr().err
    assert cli(["--workspace", str(ws.root), "-q", "train", "--warm-start", "old", "--epochs", "1", "--run-id", "warm",
                "--device", "cpu"]) == 0
    started = next(e for e in map(json.loads, ws.run("warm").events.read_text().splitlines())
                   if e["type"] == "run_started")
    w = started["warm_start"]
    # the demo has item metadata and the run item features: new items start as the old model's cold items
    assert w["from_run"] == "old" and w["new_items"] > 0 and w["new_item_init"] == "new_item_vector"
    cfg = json.loads(ws.run("warm").config.read_text())["train"]
    assert cfg["warm_start"] == "old" and cfg["model_params"]["hidden"] == 16
    assert cli(["--workspace", str(ws.root), "train", "--warm-start", "nope"]) == 2


NEWER_PARAMS = {"switch": False, "contrastive": 0.0, "cl_temp": 0.2, "highway": False}   # their defaults


def _older_copy(ws: Workspace, run_id: str, **ckpt_params) -> None:
    """Run 'old' as a run trained before NEWER_PARAMS existed: neither its config nor its checkpoint
    names them (`ckpt_params` then overrides the checkpoint's hyperparameters)."""
    import shutil
    src, dst = ws.run("old"), ws.run(run_id)
    shutil.copytree(src.root, dst.root)
    cfg = json.loads(dst.config.read_text())
    cfg["run_id"] = run_id
    cfg["train"]["model_params"] = {k: v for k, v in cfg["train"]["model_params"].items() if k not in NEWER_PARAMS}
    dst.config.write_text(json.dumps(cfg))
    ckpt = torch.load(dst.best, weights_only=False)
    params = {k: v for k, v in ckpt["config"]["model_params"].items() if k not in NEWER_PARAMS}
    ckpt["config"]["model_params"] = {**params, **ckpt_params}
    torch.save(ckpt, dst.best)


def test_warm_start_from_a_run_older_than_some_hyperparameters(ws, capsys):
    """A hyperparameter the older run does not name is the model's default, not a difference."""
    full = json.loads(ws.run("old").config.read_text())["train"]["model_params"]
    assert {k: full[k] for k in NEWER_PARAMS} == NEWER_PARAMS
    _older_copy(ws, "older")
    assert cli(["--workspace", str(ws.root), "-q", "train", "--warm-start", "older", "--epochs", "1",
                "--run-id", "warm-older", "--device", "cpu"]) == 0
    cfg = json.loads(ws.run("warm-older").config.read_text())["train"]
    assert cfg["warm_start"] == "older" and cfg["model_params"] == full
    # a value the older checkpoint does name still has to match: only it is reported
    _older_copy(ws, "older-hw", highway=True)
    capsys.readouterr()
    assert cli(["--workspace", str(ws.root), "train", "--warm-start", "older-hw", "--epochs", "1",
                "--run-id", "warm-hw", "--device", "cpu"]) == 2
    assert "other hyperparameters (highway);" in capsys.readouterr().err


def test_warm_started_new_items_start_as_the_old_models_cold_items(ws):
    """A feature model's new item begins with the vector the older model gave it from its features
    (new-item vector + category and price embeddings, the older run's FeatureSpec kept)."""
    from engine.core.config import TrainConfig
    from engine.data.item_meta import FeatureSpec
    from engine.evaluation.cold_start import catalogue_extension
    from engine.train.warm_start import new_item_vectors_for
    old_ckpt = load_checkpoint(ws.run("old").best)
    old = load_run(ws.run("old"))
    data = load_dataset(ws, "demo-tiny", stages=("items", "graph", "encodings", "metadata"))
    spec = FeatureSpec.from_dict(old_ckpt["feature_spec"])
    data.use_feature_spec(spec)
    cfg = TrainConfig.from_dict(old_ckpt["config"])
    model = build_model(cfg.model, cfg.model_params, data).eval()
    vectors = new_item_vectors_for(model, old_ckpt["model"], data.meta)
    info = warm_start(model, old_ckpt["model"], old.data.items, data.items, "old", vectors)
    assert info.new_item_init == "new_item_vector" and info.new_items > 0
    new_raw = np.setdiff1d(data.items.raw_ids, old.data.items.raw_ids)
    # the old model scores those items as an extension of its catalogue (cold start)
    gnn = old.model.eval()
    ext, ext_raw = catalogue_extension(old.data.items, data.meta)
    gnn.set_extension(*spec.encode(data.meta, ext_raw))
    with torch.no_grad():
        cold = gnn.item_vectors(torch.as_tensor(ext.encode(new_raw), dtype=torch.long))
        warm = model.item_vectors(torch.as_tensor(data.items.encode(new_raw), dtype=torch.long))
    assert torch.allclose(cold, warm, atol=1e-6)


def test_category_means_give_new_items_their_categorys_mean_vector():
    """Hand-checked: categories 1 (root) > 2, 1 > 3; items 10, 11 in 2, item 12 in 3; new item 20 in 2
    gets the mean of 10 and 11, 21 in 3 that of 12, 22 in 1 (no known leaf) the mean of all three,
    23 in the unknown category 9 and 24 without metadata keep their fresh rows (NaN)."""
    from engine.data.item_meta import CategoryTree, ItemMeta
    from engine.train.warm_start import category_means
    tree = CategoryTree(np.array([1, 2, 3]), np.array([-1, 1, 1]), ["root", "a", "b"])
    raw = np.array([10, 11, 12, 20, 21, 22, 23])
    meta = ItemMeta(raw, [None] * 7, np.array([2, 2, 3, 2, 3, 1, 9]), np.full(7, np.nan), np.full(7, -1, np.int8), tree)
    known = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    out = category_means(meta)(np.array([20, 21, 22, 23, 24]), np.array([10, 11, 12]), known)
    assert torch.equal(out[0], torch.tensor([2.0, 1.0]))
    assert torch.equal(out[1], torch.tensor([5.0, 5.0]))
    assert torch.allclose(out[2], torch.tensor([3.0, 7.0 / 3.0]))
    assert torch.isnan(out[3]).all() and torch.isnan(out[4]).all()
