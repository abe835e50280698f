"""Temporal split: cut points, blackout edges, days and test-file modes."""

import numpy as np
import pytest

from engine.core.config import DataConfig
from engine.core.errors import StageError
from engine.data.sessions import Sessions
from engine.data.split import DAY_MS, split_sessions


def make(starts):
    starts = np.sort(np.asarray(starts, dtype=np.int64))
    n = len(starts)
    offsets = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
    ts = np.repeat(starts, 3) + np.tile([0, 1, 2], n)
    return Sessions(np.arange(n), np.arange(n), starts, starts + 2, offsets,
                    np.tile([1, 2, 3], n).astype(np.int64), np.zeros(3 * n, np.int8), ts)


def test_ratio_split_blackout_edges():
    D = DAY_MS
    # probes right at the blackout edges: 8D-1 (last train start), 13D-1 (last val start), 15D-1 (dropped)
    starts = [d * D for d in range(20)] + [8 * D - 1, 13 * D - 1, 15 * D - 1]
    cfg = DataConfig(train_ratio=0.48, val_ratio=0.31, blackout_days=2)
    parts, st = split_sessions(make(starts), cfg)
    s_sorted = np.sort(starts)
    t1, t2 = s_sorted[int(0.48 * 23)], s_sorted[int(0.79 * 23)]   # indices 11 and 18
    assert (t1, t2) == (10 * D, 15 * D)
    # train: start < t1 - gap = 8D
    assert parts["train"].start.tolist() == [d * D for d in range(8)] + [8 * D - 1]
    # val: 10D <= start < 13D
    assert parts["val"].start.tolist() == [10 * D, 11 * D, 12 * D, 13 * D - 1]
    # test: start >= 15D, exactly the latest sessions
    assert parts["test"].start.tolist() == [15 * D, 16 * D, 17 * D, 18 * D, 19 * D]
    # dropped: 8D, 9D (before t1) and 13D, 14D, 15D-1 (before t2)
    assert st["blackout_dropped_train_val"] == 2 and st["blackout_dropped_val_test"] == 3
    assert st["blackout_dropped"] == 5
    assert st["train"]["sessions"] == 9 and st["test"]["sessions"] == 5
    assert st["cut_train_val"] == 10 * D and st["cut_val_test"] == 15 * D


def test_zero_blackout_keeps_everything():
    D = DAY_MS
    parts, st = split_sessions(make([d * D for d in range(20)]),
                               DataConfig(train_ratio=0.7, val_ratio=0.15, blackout_days=0))
    assert [len(parts[p]) for p in ("train", "val", "test")] == [14, 3, 3]
    assert st["blackout_dropped"] == 0


def test_days_mode_last_days_are_test():
    D = DAY_MS
    starts = [d * D for d in range(30)]
    parts, _ = split_sessions(make(starts), DataConfig(split_mode="days", test_days=7,
                                                       val_ratio=0.2, blackout_days=0))
    # t2 = 29D - 7D = 22D: test = starts >= 22D; before: 22 sessions, t1 = sorted[floor(0.8*22)=17]
    assert parts["test"].start.min() == 22 * D and len(parts["test"]) == 8
    assert parts["val"].start.tolist() == [d * D for d in range(17, 22)]
    assert len(parts["train"]) == 17


def test_days_mode_blackout_before_test():
    D = DAY_MS
    parts, st = split_sessions(make([d * D for d in range(30)]),
                               DataConfig(split_mode="days", test_days=7, val_ratio=0.2, blackout_days=1))
    # val [17D, 21D), 21D dropped, test >= 22D; train < 16D, 16D dropped
    assert parts["val"].start.tolist() == [d * D for d in range(17, 21)]
    assert len(parts["test"]) == 8 and len(parts["train"]) == 16 and st["blackout_dropped"] == 2


def test_test_file_mode_uses_given_sessions():
    D = DAY_MS
    train_file = make([d * D for d in range(10)])
    test_file = make([20 * D, 21 * D])
    parts, st = split_sessions(train_file, DataConfig(split_mode="test_file", val_ratio=0.2,
                                                      blackout_days=1), test_file)
    assert parts["test"] is test_file
    # t1 = sorted[floor(0.8 * 10)] = 8D; blackout [7D, 8D) drops 7D; val = 8D, 9D
    assert parts["train"].start.tolist() == [d * D for d in range(7)]
    assert parts["val"].start.tolist() == [8 * D, 9 * D]
    assert st["blackout_dropped"] == 1 and st["cut_val_test"] is None


def test_empty_split_is_a_clear_error():
    D = DAY_MS
    with pytest.raises(StageError, match="val split is empty"):
        split_sessions(make([d * D for d in range(10)]), DataConfig(blackout_days=5))
