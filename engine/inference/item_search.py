"""Candidate search over a model's item table: a product-quantised fast scan over every item (faiss).

Scoring a session against every item is one pass over the [V+1, d] table: ~26 ms for RetailRocket's
235K items at d = 256 on the 2-core dev CPU (memory-bound; a bfloat16 or float16 table still costs
16-17 ms, measured 2026-11-30). The search keeps every item but compresses it: product quantisation
with 4-bit codes for each pair of dimensions (d/2 sub-quantisers of 16 centroids, 64 bytes per item at
d = 256 instead of 1 KB), scanned with faiss' SIMD "fast scan" kernels, which score the codes from
look-up tables held in registers. The scan proposes the `candidates` best approximate items; the
recommender scores them exactly (dot product plus the repeat logits of the session's items, which
are always candidates), so an answer differs from exact search only when a true top-k item is missing
from the candidates. `candidates` is calibrated on held-out sessions until the top-k agrees with
exact search on a target share of them (see `Recommender.calibrate_search`).

Why not an inverted file (IVF, the search before this one): it scans only the lists near the query,
which pays when the item vectors cluster. A one-epoch model's vectors on the 238K-item `wide` demo do
not: its IVF index needed 1,024 of 1,952 lists for 99% agreement (~10 ms per request), and 1,024 lists
of a 4-bit IVF-PQ fast-scan index still agreed on only 88%. The flat fast scan agrees on 99.9% with 256
candidates (100% with 1,024) in 0.9 ms per query, and on the full demo's 82K items on 100% in 0.24 ms;
it does not depend on how well the model clusters (one thread, dev CPU, 2026-11-30; `sessrec bench
search` measures it on any run).

The codes are held in `SCAN_PARTS` contiguous parts (one trained quantiser), scanned on that many
threads at once (fewer on a machine with fewer cores): at 238K items, one query in 0.8 against
1.0 ms, 32 in 16 against 21-28 ms, and a served ONNX model at 64 concurrent requests answered
502-507 against 413-430 requests/s (dev CPU, 2026-11-30).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.core.atomic import atomic_path, write_json
from engine.core.errors import InputError
from engine.core.threads import available_cores


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss is a declared dependency
        raise InputError("approximate search needs faiss (pip install faiss-cpu); use --search exact") from e
    return faiss


CODEC = "pq4fs"            # 4-bit product quantisation, fast-scan layout (IndexPQFastScan)
MIN_CANDIDATES = 64        # where calibration starts: the scan costs about the same for 64 or 256
TRAIN_POINTS = 65_536      # k-means sample: 16 centroids per sub-quantiser need far fewer
MIN_TRAIN = 16 * 39        # faiss' floor for 16 centroids (39 points each); small tables are tiled
SCAN_PARTS = 2             # the codes in this many parts, scanned in parallel


@dataclass
class SearchInfo:
    n_items: int
    m: int                             # sub-quantisers (4 bits each): d/2, or d when d is odd
    candidates: int                    # approximate best items rescored exactly, for top-`k`
    agreement: float | None = None     # share of calibration sessions whose top-k equals exact search
    k: int = 10
    sessions: int = 0                  # calibration sessions
    signature: str = ""                # what the table came from (checkpoint size and mtime)
    codec: str = CODEC
    parts: int = 1                     # contiguous parts of the codes (items 1..V in order)


def sub_quantisers(d: int) -> int:
    """Two dimensions per 4-bit code (one when d is odd): at d = 256, 128 codes agreed with exact
    top-10 after rescoring 256 candidates on 99.9% of prefixes where 64 codes needed ~1,000 for 94%."""
    return d // 2 if d % 2 == 0 else d


class PQSearch:
    """Inner-product fast-scan PQ index over rows 1..V of an item table (row 0 is padding), its codes
    in `info.parts` contiguous parts."""

    def __init__(self, parts: list, info: SearchInfo) -> None:
        faiss = _faiss()
        self.parts, self.info = parts, info
        # the parts as one index (it does not own them: `parts` keeps them alive), one thread per
        # part when the cores allow; ids run on from part to part: the table's item numbers
        self._index = faiss.IndexShards(parts[0].d, min(len(parts), available_cores()) > 1, True)
        for part in parts:
            self._index.add_shard(part)

    @classmethod
    def build(cls, table: np.ndarray, seed: int = 0, signature: str = "", parts: int = SCAN_PARTS) -> "PQSearch":
        faiss = _faiss()
        x = np.ascontiguousarray(table[1:], dtype=np.float32)
        n, d = x.shape
        m = sub_quantisers(d)
        trained = faiss.IndexPQFastScan(d, m, 4, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=TRAIN_POINTS, replace=False)] if n > TRAIN_POINTS else x
        if len(sample) < MIN_TRAIN:         # repeated rows: the same centroids, no faiss warning
            sample = np.resize(sample, (MIN_TRAIN, d))
        trained.pq.cp.seed = seed
        trained.train(sample)
        indexes = []
        for rows in np.array_split(x, max(1, min(parts, n))):
            part = faiss.clone_index(trained)      # the same quantiser, its own codes
            part.add(rows)
            indexes.append(part)
        return cls(indexes, SearchInfo(n_items=n, m=m, candidates=min(n, MIN_CANDIDATES), signature=signature,
                                       parts=len(indexes)))

    def set_candidates(self, n: int) -> None:
        self.info.candidates = int(max(1, min(n, self.info.n_items)))

    def candidates_for(self, k: int, extra: int = 0) -> int:
        """Candidates for a top-`k` query: the calibrated count scaled from its `k` (a top-100 needs
        more than a top-10), and at least k + `extra` (the session's items, which may be excluded)."""
        return min(self.info.n_items, max(-(-self.info.candidates * k // self.info.k), k + extra))

    def search(self, queries: np.ndarray, n: int) -> np.ndarray:
        """int64 [B, n] item indices (1..V) of the best approximate inner products; 0 where fewer
        were found."""
        _, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(n, self.info.n_items))
        return np.where(ids >= 0, ids + 1, 0)

    def calibrate(self, agreement: Callable[[], float], target: float) -> float:
        """Set the smallest candidate count, doubling from `MIN_CANDIDATES` (capped at every item:
        exact), whose `agreement()` (the caller's measure against exact search, read at the current
        count) reaches `target`; returns that agreement."""
        n = MIN_CANDIDATES
        while True:
            self.set_candidates(n)
            agree = agreement()
            if agree >= target or self.info.candidates >= self.info.n_items:
                return agree
            n *= 2

    # ---- persistence: an index is cached beside the run it was built from -------------------------
    def save(self, path: Path) -> None:
        """One .npz file: each part serialised by faiss; the info beside it as JSON."""
        faiss = _faiss()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"part{i}": faiss.serialize_index(p) for i, p in enumerate(self.parts)})
        write_json(path.with_suffix(".json"), asdict(self.info))

    @classmethod
    def load(cls, path: Path, signature: str) -> "PQSearch | None":
        """The cached index when it was built from the same table (`signature`) with this codec,
        else None."""
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            return None
        try:
            info = SearchInfo(**json.loads(meta.read_text()))
        except (ValueError, TypeError):
            return None
        if info.signature != signature or info.agreement is None or info.codec != CODEC:
            return None
        faiss = _faiss()
        try:
            with np.load(path) as blobs:
                parts = [faiss.deserialize_index(blobs[f"part{i}"]) for i in range(info.parts)]
        except Exception:      # truncated or foreign (zipfile, numpy and faiss raise their own kinds): rebuilt
            return None
        if sum(p.ntotal for p in parts) != info.n_items:
            return None
        return cls(parts, info)
