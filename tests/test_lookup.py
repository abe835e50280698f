"""find_sorted: positions in sorted keys, -1 where absent, for any shape of values."""

import numpy as np

from engine.core.lookup import find_sorted


def test_positions_and_misses():
    keys = np.array([3, 7, 9], np.int64)
    assert find_sorted(keys, np.array([9, 3, 4, 10, -1, 7])).tolist() == [2, 0, -1, -1, -1, 1]
    assert find_sorted(keys, np.array([[7, 8], [0, 3]])).tolist() == [[1, -1], [-1, 0]]
    assert find_sorted(np.zeros(0, np.int64), np.array([[1, 2]])).tolist() == [[-1, -1]]
    assert find_sorted(keys, np.array([3])).dtype == np.int64
