"""Laplacian positional encodings (LapPE) of the item co-occurrence graph.

Matrix: the symmetric normalised Laplacian L = I - D^-1/2 A D^-1/2 of the co-occurrence graph with
self-loops removed and edge weights log1p(count). Why log1p: counts are heavy-tailed (a few pairs
co-occur hundreds of times); with plain counts those pairs dominate the degrees and the low
eigenvectors localise on them, while binary weights throw away how often a pair co-occurs. log1p
keeps the order of strengths and compresses the tail.

Rule, per connected component (the graph is disconnected, and the lowest eigenvectors of the whole
graph would only be component indicators): the k eigenvectors after the trivial one (eigenvalues
ascending; the first, 0, has eigenvector proportional to D^1/2 1 and is skipped). They are the plain
eigenvectors of the symmetric L, so the columns are orthonormal (Euclidean) within each component
and orthogonal to D^1/2 1. A component with n nodes has at most n - 1 such vectors; the remaining
columns are 0. Isolated nodes (no edge other than a self-loop) and the padding row 0 are all zeros.

Sign rule (eigenvectors are defined up to sign): within each component, each column is flipped so
that its entry of largest magnitude is positive; ties (entries within a relative 1e-4 of the
largest, which absorbs solver error on symmetric structures) go to the lowest node index. The model
should still flip signs at random while training. Degenerate eigenvalues have no unique basis; the
one returned is deterministic for a given input.

Method: components of at most `dense_threshold` nodes are solved exactly with batched
`np.linalg.eigh` (components stacked by size, so there is no loop per component); larger ones with
ARPACK `eigsh` on D^-1/2 A D^-1/2 with the trivial vector deflated (largest eigenvalues mu = 1 -
lambda), from a seeded starting vector and under a matrix-vector product budget. If eigsh does not
converge in its budget it is retried once with a loose tolerance (orthonormal vectors from the low
end of the spectrum, not necessarily the k lowest), and if that fails too, only the converged
vectors are kept and the other columns are 0; `stats["notes"]` says so. Same input and BLAS build
-> bitwise same output (BLAS is held to one thread when threadpoolctl is installed).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.data.graph import CoocGraph

DENSE_THRESHOLD = 256       # components up to this many nodes: dense batched eigh
SIGN_TIE_RTOL = 1e-4        # entries this close to the column's largest magnitude count as ties
_DENSE_CHUNK = 1 << 22      # float64 elements per stacked eigh batch (32 MiB)
_LOOSE_TOL = 1e-2           # retry tolerance when eigsh runs out of budget


def _blas_single_thread() -> contextlib.AbstractContextManager:
    """One BLAS thread: ARPACK's many small BLAS calls get far slower when threads compete for
    busy cores, and a fixed thread count keeps results bitwise reproducible."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip each column of `vecs` ([..., n, m], rows in ascending node order) so that its entry of
    largest magnitude is positive; ties within SIGN_TIE_RTOL go to the lowest row."""
    mag = np.abs(vecs)
    top = mag.max(axis=-2, keepdims=True)
    pivot = np.argmax(mag >= top * (1 - SIGN_TIE_RTOL), axis=-2)[..., None, :]  # first = lowest
    sign = np.where(np.take_along_axis(vecs, pivot, axis=-2) < 0, -1.0, 1.0)
    return vecs * sign


def _normalised_adjacency(graph: CoocGraph) -> tuple[sp.csr_matrix, np.ndarray]:
    """D^-1/2 A D^-1/2 with log1p weights, no self-loops; and the degrees of A."""
    a = graph.to_scipy().astype(np.float64).tocoo()
    keep = a.row != a.col
    row, col, w = a.row[keep], a.col[keep], np.log1p(a.data[keep])
    deg = np.bincount(row, weights=w, minlength=graph.n_nodes).astype(np.float64)
    inv = np.zeros(graph.n_nodes)
    np.divide(1.0, np.sqrt(deg), out=inv, where=deg > 0)
    n = sp.csr_matrix((w * inv[row] * inv[col], (row, col)), shape=(graph.n_nodes,) * 2)
    return n, deg


def _dense_components(nmat: sp.csr_matrix, labels: np.ndarray, sizes: np.ndarray,
                      comp_ids: np.ndarray, k: int, out: np.ndarray,
                      want: int) -> np.ndarray | None:
    """Exact eigenvectors of the components `comp_ids` (all small), stacked by size and solved with
    batched eigh. Writes `out`; returns the non-trivial eigenvalues of component `want`, if here."""
    in_set = np.zeros(len(sizes), dtype=bool)
    in_set[comp_ids] = True
    nodes = np.flatnonzero(in_set[labels])
    # order nodes by (component size, component, node): equal sizes form contiguous blocks
    nodes = nodes[np.lexsort((nodes, labels[nodes], sizes[labels[nodes]]))]
    comp_of = labels[nodes]
    new = np.ones(len(nodes), dtype=bool)
    new[1:] = comp_of[1:] != comp_of[:-1]
    rank = np.cumsum(new) - 1                       # component rank in this order
    first = np.flatnonzero(new)
    local = np.zeros(nmat.shape[0], dtype=np.int64)
    local[nodes] = np.arange(len(nodes)) - first[rank]
    rank_of = np.full(nmat.shape[0], -1, dtype=np.int64)
    rank_of[nodes] = rank
    comp_by_rank = comp_of[first]
    size_by_rank = sizes[comp_by_rank]

    e = nmat.tocoo()
    er = rank_of[e.row]
    sel = np.flatnonzero(er >= 0)
    sel = sel[np.argsort(er[sel], kind="stable")]
    e_rank, e_row, e_col, e_w = er[sel], local[e.row[sel]], local[e.col[sel]], e.data[sel]

    want_rank = np.flatnonzero(comp_by_rank == want)
    want_rank = int(want_rank[0]) if len(want_rank) else -1
    want_vals = None
    # boundaries of runs of equal size (ranks are ordered by size)
    bounds = np.flatnonzero(np.diff(size_by_rank, prepend=-1, append=-1))
    for g0, g1 in zip(bounds[:-1], bounds[1:]):     # one pass per distinct size (<= threshold)
        s = int(size_by_rank[g0])
        m = min(k, s - 1)
        step = max(1, _DENSE_CHUNK // (s * s))
        for c0 in range(g0, g1, step):
            c1 = min(g1, c0 + step)
            lo, hi = np.searchsorted(e_rank, [c0, c1])
            mats = np.zeros((c1 - c0, s, s))
            mats[e_rank[lo:hi] - c0, e_row[lo:hi], e_col[lo:hi]] = -e_w[lo:hi]
            mats += np.eye(s)                       # L = I - D^-1/2 A D^-1/2
            w, v = np.linalg.eigh(mats)
            block = nodes[first[c0]:first[c0] + (c1 - c0) * s].reshape(c1 - c0, s)
            out[block, :m] = fix_signs(v[:, :, 1:1 + m])
            if c0 <= want_rank < c1:
                want_vals = w[want_rank - c0, 1:1 + m]
    return want_vals


def _sparse_component(nmat: sp.csr_matrix, deg: np.ndarray, nodes: np.ndarray, k: int, seed: int,
                      tol: float, max_matvecs: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """k non-trivial eigenpairs of one large component with eigsh; (eigenvalues, vectors, info)."""
    sub = nmat[nodes][:, nodes].tocsr()
    n = len(nodes)
    u0 = np.sqrt(deg[nodes])
    u0 /= np.linalg.norm(u0)
    count = [0]

    def matvec(x: np.ndarray) -> np.ndarray:
        # the trivial eigenvector (mu = 1) deflated to mu = 0, far from the wanted end
        count[0] += 1
        x = x.reshape(-1)
        return sub @ x - u0 * (u0 @ x)

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    rng = np.random.default_rng([seed, n, int(nodes[0])])
    v0 = rng.standard_normal(n)
    v0 -= u0 * (u0 @ v0)
    ncv = min(n - 1, max(2 * k + 1, 40))
    per_restart = max(1, ncv - k)
    info: dict = {"nodes": n, "method": "eigsh", "tol": tol}
    best: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros((n, 0)))
    for attempt, (t, budget) in enumerate([(tol, max_matvecs), (_LOOSE_TOL, max_matvecs // 2)]):
        try:
            mu, vecs = eigsh(op, k=k, which="LA", v0=v0, ncv=ncv, tol=t,
                             maxiter=max(1, budget // per_restart))
            best = (mu, vecs)
            if attempt:
                info.update(method="eigsh-loose", tol=t,
                            note=f"eigsh did not converge to tol {tol:g} within {max_matvecs} "
                                 f"matvecs; used tol {t:g} (vectors from the low end of the "
                                 "spectrum, not necessarily the k lowest)")
            break
        except ArpackNoConvergence as err:
            if len(err.eigenvalues) > len(best[0]):
                best = (err.eigenvalues, err.eigenvectors)
            info.update(method="eigsh-partial",
                        note=f"eigsh did not converge within its budget; kept the "
                             f"{len(best[0])} of {k} vectors that did, the rest are 0")
    info["matvecs"] = count[0]
    mu, vecs = best
    order = np.argsort(-mu, kind="stable")          # lambda = 1 - mu ascending
    lam, vecs = 1.0 - mu[order], vecs[:, order]
    resid = vecs - sub @ vecs + np.outer(u0, u0 @ vecs) - vecs * lam
    info["max_residual"] = float(np.linalg.norm(resid, axis=0).max()) if len(lam) else None
    return lam, fix_signs(vecs), info


def laplacian_pe(graph: CoocGraph, k: int = 16, seed: int = 0, progress: ProgressFn | None = None,
                 *, dense_threshold: int = DENSE_THRESHOLD, tol: float = 1e-5,
                 max_matvecs: int = 1000) -> tuple[np.ndarray, dict]:
    """float32[n_nodes, k] Laplacian PE (rules in the module docstring) and stats."""
    if k < 1:
        raise InputError(f"encodings: k must be >= 1, got {k}")
    t0 = time.perf_counter()
    rep = StageReporter("encodings", progress, total=3, unit="steps")
    nmat, deg = _normalised_adjacency(graph)
    _, labels = connected_components(nmat, directed=False)
    sizes = np.bincount(labels)
    comps = np.flatnonzero(sizes >= 2)              # size 1: isolated node, all zeros
    # eigsh needs k well below n; smaller components are cheap to solve exactly
    sparse_min = max(dense_threshold, 4 * (k + 1))
    large = comps[sizes[comps] > sparse_min]
    large = large[np.argsort(-sizes[large], kind="stable")]
    small = comps[sizes[comps] <= sparse_min]
    rep(1, message=f"{len(comps):,} components ({len(large)} large)")

    biggest = int(comps[np.argmax(sizes[comps])]) if len(comps) else -1
    out = np.zeros((graph.n_nodes, k), dtype=np.float64)
    big_vals: np.ndarray | None = None
    sparse_info: list[dict] = []
    with _blas_single_thread():
        if len(small):
            big_vals = _dense_components(nmat, labels, sizes, small, k, out, biggest)
        rep(2, message="small components done")
        # nodes grouped by component, ascending within each (stable sort)
        by_comp = np.argsort(labels, kind="stable")
        comp_start = np.concatenate([[0], np.cumsum(sizes)])
        # components with > sparse_min nodes: at most n_nodes / sparse_min of them
        for i, c in enumerate(large):
            nodes = by_comp[comp_start[c]:comp_start[c + 1]]
            lam, vecs, info = _sparse_component(nmat, deg, nodes, k, seed, tol, max_matvecs)
            out[nodes, :vecs.shape[1]] = vecs
            if c == biggest:
                big_vals = lam
            sparse_info.append(info)
            rep(2 + (i + 1) / len(large), message=f"component of {len(nodes):,} nodes: "
                                                  f"{info['method']}")
    notes = [f"component {j} ({d['nodes']} nodes): {d['note']}"
             for j, d in enumerate(sparse_info) if "note" in d]
    stats = {
        "k": k,
        "weights": "log1p(count), self-loops removed",
        "method": "+".join(name for name, used in (("dense", len(small)), ("eigsh", len(large)))
                           if used) or "none",
        "components": int(len(comps)),
        "components_dense": int(len(small)),
        "components_sparse": int(len(large)),
        "nodes_with_pe": int(sizes[comps].sum()),
        "isolated_nodes": int(np.count_nonzero(sizes[labels[1:]] == 1)),
        "largest_component": int(sizes[biggest]) if biggest >= 0 else 0,
        # non-trivial eigenvalues of the largest component, ascending
        "largest_eigenvalues": [] if big_vals is None else [round(float(x), 6) for x in big_vals],
        "sparse": sparse_info,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    rep(3, message="done")
    return out.astype(np.float32), stats
