"""Laplacian PE: per-component eigenvectors, zero padding/isolated rows, sign rule, determinism,
and the sparse (eigsh) path against the dense one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from engine.data.encodings import SIGN_TIE_RTOL, laplacian_pe
from engine.data.graph import CoocGraph


def graph_from_edges(n_items: int, edges: list[tuple[int, int, float]]) -> CoocGraph:
    """Symmetric CoocGraph from undirected (a, b, weight) edges; a == b is a self-loop."""
    a = np.array([e[0] for e in edges])
    b = np.array([e[1] for e in edges])
    w = np.array([e[2] for e in edges], dtype=np.float64)
    off = a != b
    m = sp.coo_matrix((np.concatenate([w, w[off]]),
                       (np.concatenate([a, b[off]]), np.concatenate([b, a[off]]))),
                      shape=(n_items + 1,) * 2).tocsr()
    m.sum_duplicates()
    m.sort_indices()
    return CoocGraph(n_items + 1, m.indptr.astype(np.int64), m.indices.astype(np.int32),
                     m.data.astype(np.float32), None)


def dense_laplacian(g: CoocGraph, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-Laplacian of `nodes` (log1p weights, no self-loops) and its D^1/2 1 direction."""
    a = np.log1p(g.to_scipy().toarray().astype(np.float64)[np.ix_(nodes, nodes)])
    np.fill_diagonal(a, 0)
    d = a.sum(1)
    lap = np.eye(len(nodes)) - a / np.sqrt(np.outer(d, d))
    return lap, np.sqrt(d) / np.linalg.norm(np.sqrt(d))


PATH = np.arange(1, 7)            # 1-2-3-4-5-6 with distinct weights
CYCLE = np.arange(7, 12)          # 7..11, uniform weights: degenerate eigenvalue pairs
ISOLATED, LOOP_ONLY = 12, 13      # no edge at all; only a self-loop
K = 8


@pytest.fixture(scope="module")
def two_components():
    edges = [(1, 2, 1), (2, 3, 2), (3, 4, 3), (4, 5, 1), (5, 6, 5), (3, 3, 4)]  # + a self-loop
    edges += [(7 + i, 7 + (i + 1) % 5, 2) for i in range(5)]
    edges += [(LOOP_ONLY, LOOP_ONLY, 3)]
    g = graph_from_edges(13, edges)
    pe, stats = laplacian_pe(g, k=K, seed=0)
    return g, pe, stats


def check_component(g: CoocGraph, pe: np.ndarray, nodes: np.ndarray, atol: float = 1e-5):
    """Columns are orthonormal eigenvectors of the component's L, after the trivial one."""
    lap, trivial = dense_laplacian(g, nodes)
    m = min(K, len(nodes) - 1)
    vecs = pe[nodes].astype(np.float64)
    want = np.linalg.eigvalsh(lap)[1:1 + m]
    np.testing.assert_allclose(vecs[:, :m].T @ vecs[:, :m], np.eye(m), atol=atol)
    np.testing.assert_allclose(trivial @ vecs[:, :m], 0, atol=atol)
    np.testing.assert_allclose(lap @ vecs[:, :m], vecs[:, :m] * want, atol=atol)
    assert np.all(vecs[:, m:] == 0)
    check_signs(vecs[:, :m])


def check_signs(vecs: np.ndarray):
    mag = np.abs(vecs)
    for j in range(vecs.shape[1]):
        ties = np.flatnonzero(mag[:, j] >= mag[:, j].max() * (1 - SIGN_TIE_RTOL))
        assert vecs[ties[0], j] > 0


def test_shape_dtype_and_zero_rows(two_components):
    _, pe, stats = two_components
    assert pe.shape == (14, K) and pe.dtype == np.float32
    assert np.all(pe[0] == 0)
    assert np.all(pe[ISOLATED] == 0) and np.all(pe[LOOP_ONLY] == 0)
    assert stats["components"] == 2 and stats["components_dense"] == 2
    assert stats["isolated_nodes"] == 2
    assert stats["largest_component"] == 6 and len(stats["largest_eigenvalues"]) == 5


def test_path_component(two_components):
    g, pe, _ = two_components
    check_component(g, pe, PATH)


def test_cycle_component(two_components):
    g, pe, _ = two_components
    check_component(g, pe, CYCLE)
    # uniform 5-cycle: eigenvalues 1 - cos(2 pi j / 5), each non-zero one twice
    lam = 1 - np.cos(2 * np.pi * np.array([1, 1, 2, 2]) / 5)
    lap, _ = dense_laplacian(two_components[0], CYCLE)
    vecs = pe[CYCLE, :4].astype(np.float64)
    np.testing.assert_allclose(np.diag(vecs.T @ lap @ vecs), lam, atol=1e-5)


def test_two_node_component_sign():
    pe, _ = laplacian_pe(graph_from_edges(3, [(2, 3, 1)]), k=2)
    s = np.sqrt(0.5)
    np.testing.assert_allclose(pe[2:], [[s, 0], [-s, 0]], atol=1e-7)  # tie -> lowest node positive


def test_deterministic(two_components):
    g, pe, stats = two_components
    pe2, stats2 = laplacian_pe(g, k=K, seed=0)
    assert np.array_equal(pe, pe2)
    stats.pop("seconds"), stats2.pop("seconds")
    assert stats == stats2


def test_no_edges():
    pe, stats = laplacian_pe(graph_from_edges(4, [(2, 2, 1)]), k=3)
    assert pe.shape == (5, 3) and not pe.any()
    assert stats["components"] == 0 and stats["largest_eigenvalues"] == []


def random_component(n: int, first: int, rng: np.random.Generator) -> list[tuple[int, int, float]]:
    """A ring with random chords and random counts: connected, generic spectrum."""
    edges = [(first + i, first + (i + 1) % n, float(rng.integers(1, 20))) for i in range(n)]
    a, b = rng.integers(0, n, (2, 3 * n))
    edges += [(first + i, first + j, float(rng.integers(1, 20)))
              for i, j in zip(a.tolist(), b.tolist()) if i != j]
    return edges


def test_sparse_path_matches_dense():
    rng = np.random.default_rng(3)
    # one component of 150 nodes (sparse with dense_threshold=40) and small ones of sizes 5..30
    edges = random_component(150, 1, rng)
    first = 151
    for size in (5, 5, 12, 30):
        edges += random_component(size, first, rng)
        first += size
    g = graph_from_edges(first - 1, edges)
    k = 6
    sparse_pe, sparse_stats = laplacian_pe(g, k=k, dense_threshold=40)
    dense_pe, dense_stats = laplacian_pe(g, k=k, dense_threshold=1000)
    assert sparse_stats["components_sparse"] == 1 and dense_stats["components_sparse"] == 0
    assert sparse_stats["sparse"][0]["method"] == "eigsh" and not sparse_stats["notes"]
    big = np.arange(1, 151)
    lam_s = np.array(sparse_stats["largest_eigenvalues"])
    lam_d = np.array(dense_stats["largest_eigenvalues"])
    np.testing.assert_allclose(lam_s, lam_d, atol=1e-6)
    # columns with a non-degenerate eigenvalue agree, sign included
    lap, _ = dense_laplacian(g, big)
    full = np.linalg.eigvalsh(lap)
    gaps = np.minimum(full[2:2 + k] - full[1:1 + k], full[1:1 + k] - full[:k])
    assert (gaps > 1e-3).sum() >= 4
    for j in np.flatnonzero(gaps > 1e-3):
        np.testing.assert_allclose(sparse_pe[big, j], dense_pe[big, j], atol=1e-4)
    np.testing.assert_array_equal(sparse_pe[151:], dense_pe[151:])  # small ones: same path


def test_sparse_budget_fallback_does_not_fail():
    rng = np.random.default_rng(4)
    g = graph_from_edges(300, random_component(300, 1, rng))
    pe, stats = laplacian_pe(g, k=8, dense_threshold=40, max_matvecs=30)
    info = stats["sparse"][0]
    assert info["method"] in ("eigsh-loose", "eigsh-partial") and stats["notes"]
    assert pe.shape == (301, 8) and np.isfinite(pe).all()
    m = int((np.abs(pe[1:]).sum(0) > 0).sum())  # columns that were filled
    v = pe[1:, :m].astype(np.float64)
    np.testing.assert_allclose(v.T @ v, np.eye(m), atol=1e-4)


def test_dense_batches_split_into_chunks(monkeypatch):
    import engine.data.encodings as enc
    rng = np.random.default_rng(5)
    edges, first = [], 1
    for size in (4, 4, 4, 4, 4, 3, 7):
        edges += random_component(size, first, rng)
        first += size
    g = graph_from_edges(first - 1, edges)
    whole, stats = laplacian_pe(g, k=4)
    monkeypatch.setattr(enc, "_DENSE_CHUNK", 2 * 16)  # two 4-node components per eigh call
    chunked, stats2 = laplacian_pe(g, k=4)
    np.testing.assert_array_equal(whole, chunked)
    assert stats["largest_eigenvalues"] == stats2["largest_eigenvalues"]
    assert len(stats["largest_eigenvalues"]) == 4  # the 7-node component
