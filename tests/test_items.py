"""Item index: train vocabulary in popularity order, 0 for unseen items, unseen counts."""

import numpy as np

from engine.data.items import ItemIndex, encode_splits
from engine.data.sessions import Sessions


def make(lists):
    return Sessions.from_lists(lists, np.int64)


def test_index_is_popularity_ordered_with_padding_zero():
    train = make([[500, 300, 500], [300, 500, 42]])
    val = make([[42, 7, 500]])
    test = make([[300, 8, 9], [9, 42, 8]])
    index, enc, st = encode_splits({"train": train, "val": val, "test": test})
    # counts: 500 x3, 300 x2, 42 x1 -> indices 1, 2, 3
    assert index.raw_ids.tolist() == [500, 300, 42]
    assert index.train_counts.tolist() == [3, 2, 1]
    assert enc["train"].items.tolist() == [1, 2, 1, 2, 1, 3]
    assert enc["train"].items.dtype == np.int32
    assert enc["val"].items.tolist() == [3, 0, 1]
    assert enc["test"].items.tolist() == [2, 0, 0, 0, 3, 0]
    assert st["items"] == 3
    assert st["val"] == {"events": 3, "unseen_events": 1, "unseen_items": 1,
                         "unseen_last_item_sessions": 0, "sessions": 1}
    assert st["test"]["unseen_events"] == 4 and st["test"]["unseen_items"] == 2
    assert st["test"]["unseen_last_item_sessions"] == 2


def test_ties_broken_by_raw_id_and_decode_roundtrip(tmp_path):
    index = ItemIndex.from_train(make([[9, 4, 7], [4, 9, 7]]))
    assert index.raw_ids.tolist() == [4, 7, 9]
    assert index.decode(index.encode(np.array([7, 9, 4, 1]))).tolist() == [7, 9, 4, -1]
    index.write(tmp_path / "items.parquet")
    back = ItemIndex.read(tmp_path / "items.parquet")
    assert back.raw_ids.tolist() == [4, 7, 9] and back.fingerprint() == index.fingerprint()
