"""The planted parameters of a demo log (`truth.npz`), written by the generator, read by the oracle.

Items are numbered internally 0..N-1 in ascending raw id (`raw_ids[i]` is the id in events.csv).
The file is a plain `.npz` (no pickles) with one array per field, plus `param_names`, a JSON `meta`
(size, seed, the DemoSize used) and a `version`: a file written by another version of the generator
is refused rather than misread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from engine.core.atomic import write_npz
from engine.core.errors import InputError

TRUTH_VERSION = 1
# the next-item mixture's weights, in the order of `DemoTruth.params` (see the generator's docstring)
MIX_NAMES = ("p_same", "p_repeat", "p_trans", "p_cluster", "p_global")


@dataclass
class DemoTruth:
    """The planted parameters (internal item index i <-> raw id raw_ids[i], sorted)."""

    raw_ids: np.ndarray       # int64[N], ascending
    pop: np.ndarray           # float64[N], sums to 1
    cluster: np.ndarray       # int64[N]
    cl_offsets: np.ndarray    # int64[C+1]
    cl_members: np.ndarray    # int64[N], grouped by cluster, popularity descending within
    succ_offsets: np.ndarray  # int64[N+1]
    succ_items: np.ndarray    # int64[nnz]
    succ_probs: np.ndarray    # float64[nnz], sum to 1 per item
    params: np.ndarray        # float64[7]: MIX_NAMES..., f_cart, f_buy

    PARAM_NAMES = (*MIX_NAMES, "f_cart", "f_buy")

    @property
    def mixture(self) -> np.ndarray:
        """float64[5]: the weights of the next-view mixture, in MIX_NAMES order."""
        return self.params[:len(MIX_NAMES)]

    @property
    def funnel(self) -> np.ndarray:
        """float64[3]: phi by last event code (view, addtocart, transaction): the probability that
        the next event is the funnel's next step on the same item (f_cart, f_buy, 0)."""
        return np.array([self.params[5], self.params[6], 0.0])

    def save(self, path: Path, meta: dict) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self)}
        arrays["param_names"] = np.array(self.PARAM_NAMES)
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
        arrays["version"] = np.array(TRUTH_VERSION)
        write_npz(path, arrays, "demo ground truth")

    @classmethod
    def load(cls, path: Path) -> "DemoTruth":
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"demo truth: cannot read {path}: {exc}") from exc
        with z:
            version = int(z["version"]) if "version" in z.files else None
            if version != TRUTH_VERSION:
                raise InputError(f"demo truth: {path} has version {version}, "
                                 f"expected {TRUTH_VERSION}; regenerate the demo")
            return cls(**{f.name: z[f.name] for f in fields(cls)})
