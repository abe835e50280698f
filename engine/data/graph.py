"""Item co-occurrence graph, built from the train sessions only.

Edge rule: positions i < j of the same session with j - i <= window are linked; the edge
(item_i, item_j) gets weight +1 per such position pair. Repeats inside the window give a self-loop
(item_i == item_j), kept with its count. Positions whose item is 0 (unknown to the train
vocabulary) link nothing. The graph is undirected and stored as a symmetric CSR: both directions
of each edge, a self-loop once on the diagonal, column indices sorted within each row.

With event types, each edge also counts its position pairs by unordered event-type pair
(`PAIR_TYPES`), so the model can tell "viewed together" from "viewed then bought".

Building is one pass per window offset d = 1..window (vectorised over all positions), then a
single `np.unique` over a combined (row, col, pair type) key: no loop over sessions or edges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from engine.core.atomic import read_npz, write_npz
from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.data.sessions import EVENT_TYPES, Sessions, row_ids

PAIR_TYPES: tuple[str, ...] = ("view-view", "view-addtocart", "view-transaction",
                               "addtocart-addtocart", "addtocart-transaction",
                               "transaction-transaction")
# event codes (a, b) -> index into PAIR_TYPES, symmetric in a and b
_N_EV = len(EVENT_TYPES)
_PAIR_LUT = np.array([[0, 1, 2], [1, 3, 4], [2, 4, 5]], dtype=np.int64)
_FORMAT_VERSION = 1


@dataclass
class CoocGraph:
    n_nodes: int                    # V + 1: node id == item index, node 0 is padding (no edges)
    indptr: np.ndarray              # int64[n_nodes+1], symmetric CSR
    indices: np.ndarray             # int32[nnz], sorted within each row
    weight: np.ndarray              # float32[nnz], number of linked position pairs
    pair_counts: np.ndarray | None  # int32[nnz, 6] by PAIR_TYPES (same both directions), or None

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.weight, self.indices, self.indptr),
                             shape=(self.n_nodes, self.n_nodes))

    def edge_index(self) -> np.ndarray:
        """int64[2, nnz] COO (source row, target col), both directions: torch-geometric layout."""
        return np.stack([row_ids(self.indptr), self.indices.astype(np.int64)])

    def similarity(self, alpha: float = 0.5, self_loops: bool = True) -> sp.csr_matrix:
        """sim(i, j) = w_ij / (d_i^alpha * d_j^(1 - alpha)), d = weighted degree (row sum, self-loop
        included): the cosine for alpha = 1/2. float64 CSR; `self_loops=False` drops the diagonal."""
        A = self.to_scipy().astype(np.float64)
        A.sum_duplicates()
        d = np.asarray(A.sum(axis=1)).ravel()
        rows, cols = row_ids(A.indptr), A.indices.astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = A.data / (np.power(d[rows], alpha) * np.power(d[cols], 1.0 - alpha))
        S = sp.csr_matrix((np.nan_to_num(sim, nan=0.0, posinf=0.0), A.indices, A.indptr), shape=A.shape)
        if not self_loops:
            S.setdiag(0.0)
            S.eliminate_zeros()
        return S

    def neighbor_table(self, k: int, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """The `k` most similar other items of every node (`similarity`), padded with node 0 and
        weight 0: (int64 [n_nodes, k], float32 [n_nodes, k]), most similar first."""
        S = self.similarity(alpha, self_loops=False)
        indptr, cols, vals = top_per_row(row_ids(S.indptr), S.indices.astype(np.int64), S.data,
                                         self.n_nodes, k)
        rows = row_ids(indptr)
        rank = np.arange(len(rows)) - indptr[rows]
        nbr = np.zeros((self.n_nodes, k), dtype=np.int64)
        w = np.zeros((self.n_nodes, k), dtype=np.float32)
        nbr[rows, rank], w[rows, rank] = cols, vals
        return nbr, w

    def counts(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """float32: the co-occurrence count (linked position pairs in training) of each pair of
        nodes (a[i], b[i]); 0 for no edge and for nodes outside the graph (items added later)."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        key = getattr(self, "_keys", None)
        if key is None:                  # rows ascending, columns sorted in each row: sorted keys
            key = row_ids(self.indptr) * self.n_nodes + self.indices.astype(np.int64)
            self._keys = key
        inside = (a > 0) & (b > 0) & (a < self.n_nodes) & (b < self.n_nodes)
        want = np.where(inside, a * self.n_nodes + b, -1)
        if not len(key):
            return np.zeros(len(want), np.float32)
        pos = np.minimum(np.searchsorted(key, want), len(key) - 1)
        return np.where(inside & (key[pos] == want), self.weight[pos], 0.0).astype(np.float32)

    def save(self, path: str | Path) -> None:
        arrays = {"format_version": np.int64(_FORMAT_VERSION), "n_nodes": np.int64(self.n_nodes),
                  "indptr": self.indptr, "indices": self.indices, "weight": self.weight}
        if self.pair_counts is not None:
            arrays["pair_counts"] = self.pair_counts
        write_npz(path, arrays, "co-occurrence graph")

    @classmethod
    def load(cls, path: str | Path) -> "CoocGraph":
        z = read_npz(path, _FORMAT_VERSION, "co-occurrence graph", "rebuild the graph stage")
        try:
            g = cls(int(z["n_nodes"]), z["indptr"], z["indices"], z["weight"], z.get("pair_counts"))
        except KeyError as e:
            raise InputError(f"{path}: not a co-occurrence graph file ({e})") from e
        if len(g.indptr) != g.n_nodes + 1 or len(g.indices) != g.nnz or len(g.weight) != g.nnz:
            raise InputError(f"{path}: inconsistent graph arrays; rebuild the graph stage")
        return g


def _pair_keys(sessions: Sessions, n_nodes: int, window: int, with_types: bool,
               rep: StageReporter) -> tuple[np.ndarray, int]:
    """Combined keys ((row * n_nodes + col) * 6 + pair type) of every linked position pair, in both
    directions (a self-loop once); also the number of position pairs."""
    items = sessions.items.astype(np.int64)
    events = sessions.events.astype(np.int64)
    n = len(items)
    # positions left in the session from each position (itself included): p and p+d share a
    # session iff remaining[p] > d
    remaining = np.repeat(sessions.offsets[1:], sessions.lengths) - np.arange(n, dtype=np.int64)
    known = items > 0
    chunks: list[np.ndarray] = []
    n_pairs = 0
    for d in range(1, window + 1):
        if d >= n:
            break
        p = np.flatnonzero((remaining[:-d] > d) & known[:-d] & known[d:])
        a, b = items[p], items[p + d]
        n_pairs += len(p)
        off = a != b  # a self-loop is stored once
        key = np.concatenate([a * n_nodes + b, b[off] * n_nodes + a[off]])
        if with_types:
            t = _PAIR_LUT[events[p], events[p + d]]
            key = key * len(PAIR_TYPES) + np.concatenate([t, t[off]])
        chunks.append(key)
        rep.step(f"offset {d}/{window}: {len(p):,} position pairs")
    keys = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return keys, n_pairs


def build_cooc_graph(sessions: Sessions, n_items: int, window: int = 5,
                     with_event_pairs: bool = True,
                     progress: ProgressFn | None = None) -> tuple[CoocGraph, dict]:
    """Co-occurrence graph of `sessions` (item indices 1..n_items, 0 = unknown, skipped).

    Returns the graph and stats: `graph_stats` plus window, position pairs and seconds.
    """
    t0 = time.perf_counter()
    if window < 1:
        raise InputError(f"graph: window must be >= 1, got {window}")
    if not np.issubdtype(sessions.items.dtype, np.integer):
        raise InputError(f"graph: session items must be integer indices, "
                         f"got {sessions.items.dtype}")
    if sessions.n_events and (sessions.items.min() < 0 or sessions.items.max() > n_items):
        raise InputError(f"graph: item indices must lie in 0..{n_items} (item index stage first); "
                         f"got {sessions.items.min()}..{sessions.items.max()}")
    if with_event_pairs and sessions.n_events and (
            sessions.events.min() < 0 or sessions.events.max() >= _N_EV):
        raise InputError(f"graph: event codes must lie in 0..{_N_EV - 1}")
    n_nodes = n_items + 1
    rep = StageReporter("graph", progress, total=window + 2, unit="steps")
    keys, n_pairs = _pair_keys(sessions, n_nodes, window, with_event_pairs, rep)

    # one sort does everything: unique keys come out ordered by (row, col[, type]) = CSR order
    uniq, counts = np.unique(keys, return_counts=True)
    rep.step("aggregated duplicates")
    if with_event_pairs:
        n_types = len(PAIR_TYPES)
        edge_key, ptype = np.divmod(uniq, n_types)
        first = np.ones(len(edge_key), dtype=bool)
        first[1:] = edge_key[1:] != edge_key[:-1]
        edge_id = np.cumsum(first) - 1
        edge_key = edge_key[first]
        pair_counts = np.zeros((len(edge_key), n_types), dtype=np.int32)
        pair_counts[edge_id, ptype] = counts
        weight = pair_counts.sum(axis=1, dtype=np.int64)
    else:
        edge_key, weight, pair_counts = uniq, counts, None
    row, col = np.divmod(edge_key, n_nodes)
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n_nodes), out=indptr[1:])
    g = CoocGraph(n_nodes, indptr, col.astype(np.int32), weight.astype(np.float32), pair_counts)
    build_s = time.perf_counter() - t0

    stats = graph_stats(g)
    stats.update({"window": window, "position_pairs": int(n_pairs),
                  "event_pairs": bool(with_event_pairs),
                  "build_seconds": round(build_s, 3),
                  "seconds": round(time.perf_counter() - t0, 3)})
    rep.step("stats")
    return g, stats


def top_per_row(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
                keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (indptr, cols, vals) of the `keep` largest values of each row (0 = all) of a COO matrix,
    each row sorted by value, largest first, ties by the lower column. One lexsort over all entries,
    no loop over rows: item-kNN's neighbour lists, the GNN's neighbour table, the sequential rules."""
    # values compared in float32: equal sums added up in another order still tie
    order = np.lexsort((cols, -vals.astype(np.float32), rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=n_rows)
    if keep > 0:
        rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        rows, cols, vals = rows[rank < keep], cols[rank < keep], vals[rank < keep]
        counts = np.bincount(rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, cols, vals


def graph_stats(g: CoocGraph) -> dict:
    """Summary numbers. Degrees count distinct neighbours other than the node itself; nodes,
    components and degrees are over nodes with at least one edge (a self-loop counts)."""
    rows = row_ids(g.indptr)
    is_loop = g.indices == rows
    n_loops = int(is_loop.sum())
    has_edge = np.diff(g.indptr) > 0
    has_edge[0] = False  # padding never has edges; guard against a malformed graph anyway
    degree = np.diff(g.indptr) - np.bincount(rows[is_loop], minlength=g.n_nodes)
    deg = degree[has_edge]
    n_with = int(has_edge.sum())
    out: dict = {
        "nodes": n_with,
        "edges": int((g.nnz + n_loops) // 2),
        "self_loops": n_loops,
        "avg_degree": round(float(deg.mean()), 3) if n_with else 0.0,
        "degree_min": int(deg.min()) if n_with else 0,
        "degree_median": float(np.median(deg)) if n_with else 0.0,
        "degree_max": int(deg.max()) if n_with else 0,
        "components": 0,
        "largest_component": 0,
        "isolated_items": int(g.n_nodes - 1 - n_with),
        # every linked position pair once: off-diagonal weights are stored twice
        "total_weight": float((g.weight.sum(dtype=np.float64)
                               + g.weight[is_loop].sum(dtype=np.float64)) / 2),
    }
    if n_with:
        _, labels = connected_components(g.to_scipy(), directed=False)
        sizes = np.bincount(labels[has_edge])
        sizes = sizes[sizes > 0]
        out["components"] = int(len(sizes))
        out["largest_component"] = int(sizes.max())
    if g.pair_counts is not None:
        # each undirected edge once (row <= col), so the shares add up to total_weight
        upper = g.indices >= rows
        totals = g.pair_counts[upper].sum(axis=0, dtype=np.int64)
        out["pair_type_counts"] = {name: int(c) for name, c in zip(PAIR_TYPES, totals)}
    return out
