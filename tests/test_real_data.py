"""The pipeline on the real public samples in ../shared/data (skipped cleanly when absent)."""

from __future__ import annotations

import pytest

from engine.core.config import DataConfig
from engine.data.artifacts import load_dataset
from engine.data.manifest import Dataset
from engine.data.pipeline import build
from tests.conftest import shared_file

pytestmark = pytest.mark.realdata


def stats(ds: Dataset, stage: str) -> dict:
    return Dataset.load(ds.ws, ds.name).stage_record(stage)["stats"]


def test_yoochoose_published_split_is_reproduced(workspace):
    train = shared_file("yoochoose-clicks-100k_train_full.txt.gz")
    test = shared_file("yoochoose-clicks-100k_test.txt.gz")
    cfg = DataConfig(format="rsc15", min_session_length=2, split_mode="test_file", val_ratio=0.1,
                     blackout_days=0)
    ds = Dataset.create(workspace, "yc", train, cfg, test_path=test)
    build(ds)
    ses = stats(ds, "sessionize")
    # the numbers of shared/data/README.md: the files are already sessionized (min length 2)
    assert ses["input_events"] == 70_278 and ses["sessions"] == 17_794 and ses["items"] == 2_933
    assert ses["length_median"] == 3 and ses["length_mean"] == pytest.approx(3.95, abs=0.01)
    assert ses["repeat_rate"] == pytest.approx(0.376, abs=0.001)
    assert ses["test_file"]["sessions"] == 3_416 and ses["test_file"]["input_events"] == 13_568
    spl = stats(ds, "split")
    assert spl["test"]["sessions"] == 3_416            # the published test sessions, all of them
    assert spl["blackout_dropped"] == 0
    assert spl["train"]["sessions"] + spl["val"]["sessions"] == 17_794
    assert spl["val"]["sessions"] == pytest.approx(0.1 * 17_794, abs=30)
    assert spl["train"]["end"] <= spl["val"]["end"] <= spl["test"]["end"]
    items = stats(ds, "items")
    assert 2_500 < items["items"] <= 2_933 and items["test"]["unseen_events"] < 0.05 * 13_568
    g = stats(ds, "graph")
    assert g["nodes"] == items["items"] and g["edges"] > g["nodes"] and g["components"] >= 1
    data = load_dataset(workspace, "yc")
    assert data.pe.shape == (items["items"] + 1, 16)


def test_diginetica_srgnn_preprocessing(workspace):
    path = shared_file("diginetica-sample_train-item-views.csv.gz")
    cfg = DataConfig(format="diginetica", min_session_length=2, min_item_support=5, split_mode="days",
                     test_days=7, val_ratio=0.1, blackout_days=0)
    ds = Dataset.create(workspace, "dg", path, cfg)
    build(ds)
    ing = stats(ds, "ingest")
    assert ing["events"] == 12_391 and ing["session_keys"] == 2_986 and ing["items"] == 7_139
    ses = stats(ds, "sessionize")
    # SR-GNN's preprocessing keeps 309 items and ~500 sessions of this sample (shared/data/README.md);
    # ours filters items on the whole file before dropping short sessions, as SR-GNN does
    assert 300 <= ses["items"] <= 330 and 480 <= ses["sessions"] <= 560      # measured: 317, 525
    assert ses["repeat_rate"] > 0.4          # tiny and repeat-dominated after the filter
    spl = stats(ds, "split")
    assert 20 <= spl["test"]["sessions"] <= 80 and spl["train"]["sessions"] > spl["test"]["sessions"]
    assert all(v["sessions"] > 0 for k, v in spl.items() if k in ("train", "val", "test"))
