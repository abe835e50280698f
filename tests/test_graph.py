"""Co-occurrence graph: hand-computed edges and event-pair counts, CSR layout, stats, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.errors import InputError
from engine.data.graph import PAIR_TYPES, CoocGraph, build_cooc_graph, graph_stats
from engine.data.sessions import Sessions

V, A, T = 0, 1, 2  # event codes: view, addtocart, transaction
N_ITEMS = 7        # item 7 never occurs


def make_sessions(rows: list[tuple[list[int], list[int]]]) -> Sessions:
    lengths = [len(items) for items, _ in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([r[0] for r in rows]).astype(np.int32)
    events = np.concatenate([r[1] for r in rows]).astype(np.int8)
    z = np.zeros(len(rows), dtype=np.int64)
    return Sessions(np.arange(len(rows), dtype=np.int64), z - 1, z, z, offsets, items, events,
                    np.zeros(len(items), dtype=np.int64))


# S0: positions 0..6; position 4 holds an unknown item (0) and links nothing
SESSIONS = make_sessions([
    ([1, 2, 1, 3, 0, 4, 5], [V, V, A, V, V, T, V]),
    ([2, 3], [V, A]),
    ([6, 6], [V, V]),
])


def pc(**kw: int) -> list[int]:
    """Pair-type count vector from short names: vv, va, vt, aa, at, tt."""
    names = ["vv", "va", "vt", "aa", "at", "tt"]
    return [kw.get(n, 0) for n in names]


# window 5: every linked position pair of S0 listed by hand (i, j):
#   1-2 (0,1)(1,2)  1-1 (0,2)  1-3 (2,3)(0,3)  4-5 (5,6)  2-3 (1,3)  3-4 (3,5)  1-4 (2,5)(0,5)
#   3-5 (3,6)  2-4 (1,5)  1-5 (2,6), but not (0,6): 6 apart  2-5 (1,6); S1: 2-3; S2: 6-6
EXPECTED_W5 = {
    (1, 1): (1, pc(va=1)),
    (1, 2): (2, pc(vv=1, va=1)),
    (1, 3): (2, pc(vv=1, va=1)),
    (1, 4): (2, pc(vt=1, at=1)),
    (1, 5): (1, pc(va=1)),
    (2, 3): (2, pc(vv=1, va=1)),
    (2, 4): (1, pc(vt=1)),
    (2, 5): (1, pc(vv=1)),
    (3, 4): (1, pc(vt=1)),
    (3, 5): (1, pc(vv=1)),
    (4, 5): (1, pc(vt=1)),
    (6, 6): (1, pc(vv=1)),
}
# window 2: only offsets 1 and 2; 1-4, 1-5, 2-4, 2-5, 3-5 are too far apart
EXPECTED_W2 = {
    (1, 1): (1, pc(va=1)),
    (1, 2): (2, pc(vv=1, va=1)),
    (1, 3): (1, pc(va=1)),
    (2, 3): (2, pc(vv=1, va=1)),
    (3, 4): (1, pc(vt=1)),
    (4, 5): (1, pc(vt=1)),
    (6, 6): (1, pc(vv=1)),
}


def edge_dict(g: CoocGraph) -> dict[tuple[int, int], tuple[float, list[int] | None]]:
    rows, cols = g.edge_index()
    out = {}
    for e, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        out[(r, c)] = (float(g.weight[e]),
                       None if g.pair_counts is None else g.pair_counts[e].tolist())
    return out


@pytest.mark.parametrize("window,expected", [(5, EXPECTED_W5), (2, EXPECTED_W2)])
def test_hand_computed_edges(window, expected):
    g, stats = build_cooc_graph(SESSIONS, N_ITEMS, window=window)
    got = edge_dict(g)
    want = {}
    for (a, b), (w, counts) in expected.items():
        want[(a, b)] = (float(w), counts)
        want[(b, a)] = (float(w), counts)  # both directions, a self-loop once
    assert got == want
    assert stats["position_pairs"] == sum(w for w, _ in expected.values())
    assert stats["total_weight"] == stats["position_pairs"]


def test_window_excludes_far_pairs():
    g, _ = build_cooc_graph(SESSIONS, N_ITEMS, window=5)
    m = g.to_scipy()
    # 1-5 has weight 1 from (2,6) only: (0,6) is 6 positions apart
    assert m[1, 5] == 1
    g2, _ = build_cooc_graph(SESSIONS, N_ITEMS, window=2)
    assert g2.to_scipy()[1, 4] == 0


def test_csr_layout_and_dtypes():
    g, _ = build_cooc_graph(SESSIONS, N_ITEMS, window=5)
    assert g.n_nodes == N_ITEMS + 1
    assert g.indptr.dtype == np.int64 and len(g.indptr) == g.n_nodes + 1
    assert g.indices.dtype == np.int32 and g.weight.dtype == np.float32
    assert g.pair_counts.dtype == np.int32 and g.pair_counts.shape == (g.nnz, len(PAIR_TYPES))
    m = g.to_scipy()
    assert (m != m.T).nnz == 0
    for r in range(g.n_nodes):  # sorted, unique columns per row
        cols = g.indices[g.indptr[r]:g.indptr[r + 1]]
        assert np.all(np.diff(cols) > 0)
    assert g.indptr[1] == 0                      # padding node 0 has no edges
    assert g.indptr[8] - g.indptr[7] == 0        # item 7 never occurs
    ei = g.edge_index()
    assert ei.dtype == np.int64 and ei.shape == (2, g.nnz)
    # 14 off-diagonal position pairs stored twice, 2 self-loops once
    assert g.weight.sum() == 2 * 14 + 2


def test_weights_only_without_event_pairs():
    g, stats = build_cooc_graph(SESSIONS, N_ITEMS, window=5, with_event_pairs=False)
    assert g.pair_counts is None and "pair_type_counts" not in stats
    full, _ = build_cooc_graph(SESSIONS, N_ITEMS, window=5)
    np.testing.assert_array_equal(g.indptr, full.indptr)
    np.testing.assert_array_equal(g.indices, full.indices)
    np.testing.assert_array_equal(g.weight, full.weight)
    np.testing.assert_array_equal(full.weight, full.pair_counts.sum(1))


def test_matches_brute_force_on_random_sessions():
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(40):
        n = int(rng.integers(1, 12))
        rows.append((rng.integers(0, 9, n).tolist(), rng.integers(0, 3, n).tolist()))
    s = make_sessions(rows)
    for window in (1, 3, 5):
        g, _ = build_cooc_graph(s, 8, window=window)
        want: dict = {}
        for items, events in rows:
            for i in range(len(items)):
                for j in range(i + 1, min(len(items), i + window + 1)):
                    a, b = items[i], items[j]
                    if a == 0 or b == 0:
                        continue
                    ea, eb = sorted((events[i], events[j]))
                    t = PAIR_TYPES.index(f"{('view', 'addtocart', 'transaction')[ea]}-"
                                         f"{('view', 'addtocart', 'transaction')[eb]}")
                    for key in {(a, b), (b, a)}:
                        w, c = want.get(key, (0.0, [0] * 6))
                        c = list(c)
                        c[t] += 1
                        want[key] = (w + 1, c)
        assert edge_dict(g) == want


def test_stats_on_small_graph():
    g, stats = build_cooc_graph(SESSIONS, N_ITEMS, window=2)
    # edges 1-1 1-2 1-3 2-3 3-4 4-5 6-6; neighbours excl. self: 1:{2,3} 2:{1,3} 3:{1,2,4}
    # 4:{3,5} 5:{4} 6:{} -> components {1..5}, {6}; item 7 isolated
    s = graph_stats(g)
    assert s["nodes"] == 6
    assert s["edges"] == 7
    assert s["self_loops"] == 2
    assert s["components"] == 2
    assert s["largest_component"] == 5
    assert s["isolated_items"] == 1
    assert s["avg_degree"] == pytest.approx(10 / 6, abs=1e-3)
    assert (s["degree_min"], s["degree_median"], s["degree_max"]) == (0, 2.0, 3)
    assert s["total_weight"] == 9.0
    assert s["pair_type_counts"] == {"view-view": 3, "view-addtocart": 4, "view-transaction": 2,
                                     "addtocart-addtocart": 0, "addtocart-transaction": 0,
                                     "transaction-transaction": 0}
    assert {k: stats[k] for k in s} == s


def test_empty_and_invalid_input():
    g, stats = build_cooc_graph(Sessions.empty(np.int32), 3)
    assert g.nnz == 0 and len(g.indptr) == 5
    assert stats["nodes"] == 0 and stats["edges"] == 0 and stats["isolated_items"] == 3
    with pytest.raises(InputError, match="0..5"):
        build_cooc_graph(SESSIONS, 5)
    with pytest.raises(InputError, match="window"):
        build_cooc_graph(SESSIONS, N_ITEMS, window=0)


@pytest.mark.parametrize("pairs", [True, False])
def test_save_load_round_trip(tmp_path, pairs):
    g, _ = build_cooc_graph(SESSIONS, N_ITEMS, window=5, with_event_pairs=pairs)
    path = tmp_path / "graph.npz"
    g.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.npz"]  # no temp file left
    h = CoocGraph.load(path)
    assert h.n_nodes == g.n_nodes
    for name in ("indptr", "indices", "weight"):
        np.testing.assert_array_equal(getattr(h, name), getattr(g, name))
        assert getattr(h, name).dtype == getattr(g, name).dtype
    if pairs:
        np.testing.assert_array_equal(h.pair_counts, g.pair_counts)
    else:
        assert h.pair_counts is None


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError):
        CoocGraph.load(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError):
        CoocGraph.load(tmp_path / "other.npz")


def test_similarity_and_neighbour_table_by_hand():
    # items 1..3 (node 0 = padding): w12 = 2, w13 = 1, self-loop w11 = 1; degrees d1 = 4, d2 = 2, d3 = 1
    indptr = np.array([0, 0, 3, 4, 5])
    indices = np.array([1, 2, 3, 1, 1], dtype=np.int32)
    weight = np.array([1, 2, 1, 2, 1], dtype=np.float32)
    g = CoocGraph(4, indptr, indices, weight, None)
    S = g.similarity(0.5).toarray()
    assert S[1, 2] == pytest.approx(2 / np.sqrt(4 * 2)) and S[1, 3] == pytest.approx(1 / np.sqrt(4 * 1))
    assert S[1, 1] == pytest.approx(1 / 4)                       # the self-loop stays by default
    assert g.similarity(0.5, self_loops=False).toarray()[1, 1] == 0
    nbr, w = g.neighbor_table(2)
    # item 1: 2 (0.707) before 3 (0.5), no self-loop; items 2 and 3 have one neighbour; 0 has none
    assert nbr.tolist() == [[0, 0], [2, 3], [1, 0], [1, 0]]
    assert w[1].tolist() == pytest.approx([2 / np.sqrt(8), 0.5]) and w[2, 1] == 0 and w[0].sum() == 0
    nbr1, _ = g.neighbor_table(1)
    assert nbr1[:, 0].tolist() == [0, 2, 1, 1]
