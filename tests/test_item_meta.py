"""Item metadata: RetailRocket's item_properties (the latest value per item) and category_tree (paths
from the root, a loop refused), an item table with text category paths (CSV) or ids (Parquet), the
merge of several files, coverage, the FeatureSpec's encoding, `sessrec data items` and the
metadata stage, and the cold-start stratum of a test result. Every expected value is worked out by
hand from the files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.data.item_meta import FeatureSpec, coverage, read_item_sources

PROPS = """timestamp,itemid,property,value
1000,5,categoryid,12
3000,5,categoryid,13
2000,5,available,0
4000,5,available,1
1500,5,790,n100.000
1000,7,categoryid,11
5000,7,available,0
1000,7,888,123 456
2500,9,available,1
"""
TREE = """categoryid,parentid
13,11
12,11
11,1
1,
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_retailrocket_properties_take_the_latest_value_per_item(tmp_path):
    meta, stats = read_item_sources([_write(tmp_path, "item_properties_part1.csv", PROPS),
                                     _write(tmp_path, "category_tree.csv", TREE)], None)
    assert meta.raw_ids.tolist() == [5, 7, 9]
    assert meta.category.tolist() == [13, 11, -1]          # 5: 13 at t=3000 beats 12 at t=1000
    assert meta.available.tolist() == [1, 0, 1]             # 5: 1 at t=4000 beats 0 at t=2000
    # hashed properties (790, 888) are not read: no price here
    assert np.isnan(meta.price).all()
    assert meta.paths_of(np.array([5, 7, 9, 4])).tolist()[:4] == [
        [1, 11, 13, -1, -1, -1, -1, -1], [1, 11, -1, -1, -1, -1, -1, -1], [-1] * 8, [-1] * 8]
    assert [f["kind"] for f in stats["files"]] == ["properties", "tree"]
    assert meta.describe([5])[0] == {"category": 13, "path": ["1", "11", "13"], "available": True}


def test_a_category_tree_that_loops_is_an_error(tmp_path):
    props = _write(tmp_path, "item_properties.csv", PROPS)
    tree = _write(tmp_path, "category_tree.csv", "categoryid,parentid\n1,2\n2,3\n3,1\n4,\n")
    with pytest.raises(InputError, match="the category tree loops: category 1"):
        read_item_sources([props, tree], None)
    bad = _write(tmp_path, "tree2.csv", "categoryid,parentid\n1,\nx,1\n")
    with pytest.raises(InputError, match="line 3: expected categoryid,parentid"):
        read_item_sources([props, bad], None)


def test_an_item_table_with_text_paths_and_a_later_file_winning(tmp_path):
    table = _write(tmp_path, "items.csv",
                   "sku;title;cat;price;stock\n"
                   "10;Trail shoe;Shoes > Running > Trail;€1,299.50;in stock\n"
                   "11;Road shoe;Shoes > Running;89;out of stock\n"
                   "12;Sock;Socks;n3.5;\n"
                   "x;broken;Socks;1;yes\n"
                   "10;Trail shoe v2;Shoes > Running > Trail;;\n")
    cols = {"item": "sku", "name": "title", "category": "cat", "price": "price", "available": "stock"}
    meta, stats = read_item_sources([table], cols)
    assert meta.raw_ids.tolist() == [10, 11, 12]
    assert meta.names == ["Trail shoe v2", "Road shoe", "Sock"]   # the later row of 10 wins; its empty price does not
    assert meta.price[0] == 1299.5 and meta.price[1] == 89 and meta.price[2] == 3.5
    assert meta.available.tolist() == [1, 0, -1]
    # categories numbered in order of first appearance: Shoes 1, Running 2, Trail 3, Socks 4
    assert meta.category.tolist() == [3, 2, 4]
    assert meta.describe([10])[0]["path"] == ["Shoes", "Running", "Trail"]
    assert stats["files"][0]["bad_item_rows"] == 1 and stats["files"][0]["bad_item_first_rows"] == [5]
    # a Parquet table: integer categories, boolean availability, the same --columns
    pq.write_table(pa.table({"sku": [11, 13], "title": ["Road shoe", None], "cat": [4, 7], "price": [1.0, None],
                             "stock": [True, False]}), tmp_path / "items.parquet")
    meta2, _ = read_item_sources([tmp_path / "items.parquet"], cols)
    assert meta2.raw_ids.tolist() == [11, 13] and meta2.category.tolist() == [4, 7]
    assert meta2.available.tolist() == [1, 0] and meta2.names == ["Road shoe", None]
    assert meta2.price[0] == 1.0 and np.isnan(meta2.price[1])


def test_two_tables_with_text_categories_share_one_tree(tmp_path):
    """The second table's 'Shoes > Running' is the first table's category 2, not a new 1; the tree
    holds both tables' paths: Shoes 1, Running 2, Socks 3, Bags 4."""
    cols = {"item": "sku", "category": "cat"}
    one = _write(tmp_path, "a.csv", "sku,cat\n10,Shoes > Running\n12,Socks\n")
    two = _write(tmp_path, "b.csv", "sku,cat\n11,Bags\n13,Shoes > Running\n")
    meta, _ = read_item_sources([one, two], cols)
    assert meta.raw_ids.tolist() == [10, 11, 12, 13]
    assert meta.category.tolist() == [2, 4, 3, 2]
    assert [d["path"] for d in meta.describe([10, 11, 12, 13])] == [["Shoes", "Running"], ["Bags"], ["Socks"],
                                                                     ["Shoes", "Running"]]


def test_coverage_counts_items_and_events(tmp_path):
    meta, _ = read_item_sources([_write(tmp_path, "item_properties.csv", PROPS)], None)
    cov = coverage(meta, np.array([5, 5, 5, 7, 8, 8, 9, 100]))
    assert cov == {"log_items": 5, "log_items_with_metadata": 3, "item_coverage": 0.6,
                   "event_coverage": 0.625, "metadata_items_not_in_log": 0}


def test_the_feature_spec_encodes_paths_and_price_buckets(tmp_path):
    meta, _ = read_item_sources([_write(tmp_path, "item_properties.csv", PROPS),
                                 _write(tmp_path, "category_tree.csv", TREE)], None)
    spec = FeatureSpec.fit(meta, np.array([5, 7]))
    assert spec.categories == (1, 11, 13) and spec.depth == 3 and spec.price_edges == ()
    cat, price = spec.encode(meta, np.array([5, 7, 9, 42]))
    assert cat.tolist() == [[1, 2, 3], [1, 2, 0], [0, 0, 0], [0, 0, 0]] and price.tolist() == [0, 0, 0, 0]


def test_data_items_attaches_builds_and_reports_coverage(tmp_path, capsys):
    root = tmp_path / "ws"
    assert cli(["--workspace", str(root), "-q", "demo", "--size", "tiny", "--name", "t", "--no-build"]) == 0
    src = root / "datasets" / "t" / "source"
    table = _write(tmp_path, "items.csv", "sku,title,cat\n" + "".join(
        f"{i},item {i},{'A > B' if i % 2 else 'A > C'}\n" for i in range(0, 400)))
    assert cli(["--workspace", str(root), "-q", "data", "items", "t", str(table), "--columns",
                "item=sku,name=title,category=cat"]) == 0
    rec = json.loads((root / "datasets" / "t" / "manifest.json").read_text())["stages"]["metadata"]
    # the log's items with raw id < 400 are the covered ones
    import pyarrow.csv as pacsv
    log = pacsv.read_csv(src / "events.csv").column("itemid").to_numpy()
    uniq = np.unique(log)
    st = rec["stats"]
    assert rec["status"] == "done" and st["log_items"] == len(uniq)
    assert st["log_items_with_metadata"] == int((uniq < 400).sum())
    assert st["event_coverage"] == round(float((log < 400).mean()), 4)
    assert cli(["--workspace", str(root), "data", "status", "t"]) == 0
    assert f"covers {100 * (uniq < 400).mean():.1f}% of the" in capsys.readouterr().out
    # a table without --columns, and --columns for RetailRocket files: refused with what to do
    assert cli(["--workspace", str(root), "data", "items", "t", str(table)]) == 2
    assert "needs --columns item=COL" in capsys.readouterr().err
    assert cli(["--workspace", str(root), "data", "items", "t", str(src / "category_tree.csv"),
                "--columns", "item=a,name=b"]) == 2
    assert "--columns is for an item table" in capsys.readouterr().err


def test_the_cold_start_stratum_of_a_test_result(tmp_path):
    """The demo with planted new items: the test result reports the new-item targets, and a feature
    GNN scores them (their ranks are finite), while POP cannot (every one a miss)."""
    root = tmp_path / "ws"
    assert cli(["--workspace", str(root), "-q", "demo", "--size", "tiny", "--new-items", "0.1"]) == 0
    base = ["--workspace", str(root), "-q", "train", "--dataset", "demo-tiny", "--device", "cpu"]
    assert cli(base + ["--model", "graph_transformer", "--hidden", "16", "--heads", "2", "--epochs", "1",
                       "--run-id", "feat"]) == 0
    assert cli(base + ["--model", "pop", "--run-id", "pop"]) == 0

    def cold(run):
        ev = [json.loads(x) for x in (root / "runs" / run / "events.jsonl").read_text().splitlines()]
        return next(e for e in ev if e["type"] == "run_finished")["test"]["prefixes"]["cold_start"]
    feat, pop = cold("feat"), cold("pop")
    truth = json.loads(str(np.load(root / "datasets" / "demo-tiny" / "source" / "truth.npz")["meta"]))
    planted = set(truth["new_raw_ids"])
    assert feat["scored_new_items"] and not pop["scored_new_items"]
    # the 20 planted items (10% of 200) and any other item training never saw
    assert feat["new_catalogue_items"] == pop["new_catalogue_items"] >= len(planted) == 20
    assert feat["new_items"]["n"] == pop["new_items"]["n"] > 0 and feat["known"]["n"] == pop["known"]["n"]
    assert pop["new_items"]["recall@20"] == 0.0        # an item unseen in training: a miss for POP
