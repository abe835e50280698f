"""Candidate search over a model's item table: an inverted-file (IVF) index from faiss.

Scoring a session against every item is one pass over the [V+1, d] table: ~26 ms for RetailRocket's
235K items at d = 256 on the 2-core dev CPU (memory-bound; a bfloat16 or float16 table still costs
16-17 ms, measured 2026-11-30). An IVF index clusters the items (k-means, `nlist` lists) and scans
only the `nprobe` lists nearest to the query: ~0.1-0.3 ms for the same table. The lists hold the
vectors quantised to 8 bits per dimension (faiss' scalar quantiser): scanning them is memory-bound,
and a quarter of the bytes made a served request 0.57 ms faster (3.68 -> 3.11 ms in process, 82K
items, d = 256, same calibrated nprobe and agreement; float16 lists gained nothing; measured
2026-11-30 on the dev CPU). The search only proposes candidates; the recommender scores them
exactly (dot product plus the repeat logits of the session's items, which are always candidates),
so an answer differs from exact search only when a true top-k item is missing from the candidates. `nprobe` is calibrated on held-out sessions until
the top-k agrees with exact search on a target share of them (see `Recommender.calibrate_search`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.atomic import atomic_path, write_json
from engine.errors import InputError


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss is a declared dependency
        raise InputError("approximate search needs faiss (pip install faiss-cpu); use --search exact") from e
    return faiss


CODEC = "sq8"                          # 8-bit scalar-quantised lists (IndexIVFScalarQuantizer)


@dataclass
class IVFInfo:
    n_items: int
    nlist: int
    nprobe: int
    agreement: float | None = None     # share of calibration sessions whose top-k equals exact search
    k: int = 10
    sessions: int = 0                  # calibration sessions
    signature: str = ""                # what the table came from (checkpoint size and mtime)
    codec: str = CODEC                 # how the lists store the vectors


def default_nlist(n_items: int) -> int:
    """About 4 sqrt(V) lists (faiss' guideline), at least ~39 training points per list."""
    return int(max(1, min(round(4 * math.sqrt(n_items)), n_items // 39 or 1, 16384)))


class IVFSearch:
    """Inner-product IVF index over rows 1..V of an item table (row 0 is padding)."""

    def __init__(self, index, info: IVFInfo) -> None:
        self.index, self.info = index, info
        self.set_nprobe(info.nprobe)

    @classmethod
    def build(cls, table: np.ndarray, nlist: int | None = None, seed: int = 0,
              signature: str = "") -> "IVFSearch":
        faiss = _faiss()
        x = np.ascontiguousarray(table[1:], dtype=np.float32)
        n, d = x.shape
        nlist = nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: faiss uses at most 256 points per list anyway
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=min(n, 256 * nlist), replace=False)] if n > 256 * nlist else x
        index.cp.seed = seed
        index.train(sample)
        index.add(x)
        return cls(index, IVFInfo(n_items=n, nlist=nlist, nprobe=min(nlist, 8), signature=signature))

    def set_nprobe(self, nprobe: int) -> None:
        self.info.nprobe = int(max(1, min(nprobe, self.info.nlist)))
        self.index.nprobe = self.info.nprobe

    def search(self, queries: np.ndarray, n: int) -> np.ndarray:
        """int64 [B, n] item indices (1..V) of the best inner products; 0 where fewer were found."""
        _, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(n, self.info.n_items))
        return np.where(ids >= 0, ids + 1, 0)

    def calibrate(self, agreement: Callable[[], float], target: float) -> float:
        """Set the smallest power-of-two nprobe (capped at nlist: exact) whose `agreement()` (the
        caller's measure against exact search, read at the current nprobe) reaches `target`;
        returns that agreement."""
        nprobe = 1
        while True:
            self.set_nprobe(nprobe)
            agree = agreement()
            if agree >= target or nprobe >= self.info.nlist:
                return agree
            nprobe *= 2

    # ---- persistence: an index is cached beside the run it was built from -------------------------
    def save(self, path: Path) -> None:
        faiss = _faiss()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json(path.with_suffix(".json"), asdict(self.info))

    @classmethod
    def load(cls, path: Path, signature: str) -> "IVFSearch | None":
        """The cached index when it was built from the same table (`signature`), else None."""
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            return None
        try:
            info = IVFInfo(**{"codec": "flat", **json.loads(meta.read_text())})   # before codecs: flat lists
        except (ValueError, TypeError):
            return None
        if info.signature != signature or info.agreement is None or info.codec != CODEC:
            return None
        return cls(_faiss().read_index(str(path)), info)
