"""Finding values in a sorted array of keys, vectorised: the one binary search behind the lookups
of item metadata rows, category rows and feature ids."""

from __future__ import annotations

import numpy as np


def find_sorted(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int64 positions of `values` (any shape) in the sorted, unique `keys`; -1 where absent."""
    values = np.asarray(values)
    if not len(keys):
        return np.full(values.shape, -1, np.int64)
    pos = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return np.where(keys[pos] == values, pos, -1).astype(np.int64, copy=False)


__all__ = ["find_sorted"]
