"""Vectorised batches against a slow, obviously correct per-session reference."""

import numpy as np
import torch

from engine.data.batches import BatchBuilder, SessionStore, make_examples
from engine.data.graph import CoocGraph
from engine.data.sessions import Sessions


def make(lists):
    return Sessions.from_lists(lists, np.int32)


def random_sessions(rng, n=60, n_items=12, unknown=True):
    lists = []
    for _ in range(n):
        length = int(rng.integers(2, 9))
        s = rng.integers(1 if not unknown else 0, n_items + 1, size=length)
        s[-1] = max(s[-1], 1) if rng.random() < 0.8 else s[-1]
        lists.append(s.tolist())
    return make(lists)


def test_make_examples_prefixes_and_last():
    s = make([[1, 2, 3], [4, 5], [6, 0, 7, 8]])
    ex = make_examples(s, "prefixes")
    assert ex.tolist() == [[0, 1], [0, 2], [1, 1], [2, 1], [2, 2], [2, 3]]
    assert make_examples(s, "last").tolist() == [[0, 2], [1, 1], [2, 3]]
    assert make_examples(s, "prefixes", max_per_session=1).tolist() == [[0, 2], [1, 1], [2, 3]]
    # target of (2, 1) is the unknown item 0
    assert make_examples(s, "prefixes", drop_unknown_targets=True).tolist() == \
        [[0, 1], [0, 2], [1, 1], [2, 2], [2, 3]]


def reference(sessions, examples, graph_mode, cooc_pairs=None):
    """Per-example Python: prefix without unknowns, nodes in first-seen... compared as sets."""
    out = []
    for sid, p in examples:
        a = sessions.offsets[sid]
        prefix = [int(i) for i in sessions.items[a:a + p] if i != 0]
        target = int(sessions.items[a + p])
        nodes = sorted(set(prefix))
        if graph_mode == "transitions":
            edges = {}
            for u, v in zip(prefix[:-1], prefix[1:]):
                edges[(u, v)] = edges.get((u, v), 0) + 1
                edges[(v, u)] = edges.get((v, u), 0) + 1
        else:
            edges = {(u, v): w for (u, v), w in cooc_pairs.items() if u in nodes and v in nodes and u != v}
        out.append((prefix, target, nodes, edges))
    return out


def check(batch, ref, weight_fn=lambda w: w):
    x = batch.x.tolist()
    for b, (prefix, target, nodes, edges) in enumerate(ref):
        n = int(batch.lengths[b])
        assert batch.items[b, :n].tolist() == prefix
        assert batch.items[b, n:].eq(0).all()
        assert int(batch.targets[b]) == target
        mine = [i for i, g in enumerate(batch.batch.tolist()) if g == b]
        assert sorted(x[i] for i in mine) == nodes
        # alias points at the node holding the position's item
        assert [x[int(batch.alias[b, t])] for t in range(n)] == prefix
        if n:
            assert x[int(batch.last_node[b])] == prefix[-1]
        got = {}
        for (u, v), w in zip(batch.edge_index.t().tolist(), batch.edge_weight.tolist()):
            if batch.batch[u] == b:
                assert batch.batch[v] == b
                got[(x[u], x[v])] = w
        assert set(got) == set(edges)
        for e, w in edges.items():
            assert abs(got[e] - weight_fn(w)) < 1e-5


def test_transition_batches_match_reference():
    rng = np.random.default_rng(0)
    s = random_sessions(rng)
    ex = make_examples(s, "prefixes")
    builder = BatchBuilder(SessionStore(s), n_items=12, graph_mode="transitions")
    for chunk in np.array_split(ex, 5):
        check(builder(chunk), reference(s, chunk, "transitions"))


def test_cooc_batches_match_reference():
    rng = np.random.default_rng(1)
    s = random_sessions(rng, unknown=False)
    n_items = 12
    # a random symmetric global graph with weights
    pairs = {}
    for _ in range(40):
        u, v = map(int, rng.integers(1, n_items + 1, size=2))
        w = int(rng.integers(1, 5))
        pairs[(u, v)] = pairs[(v, u)] = w
    rows = sorted(pairs)
    indptr = np.zeros(n_items + 2, np.int64)
    for u, _ in rows:
        indptr[u + 1] += 1
    indptr = np.cumsum(indptr)
    g = CoocGraph(n_nodes=n_items + 1, indptr=indptr,
                  indices=np.array([v for _, v in rows], np.int32),
                  weight=np.array([pairs[r] for r in rows], np.float32), pair_counts=None)
    ex = make_examples(s, "prefixes")
    builder = BatchBuilder(SessionStore(s), n_items=n_items, graph_mode="cooc", cooc=g)
    for chunk in np.array_split(ex, 4):
        check(builder(chunk), reference(s, chunk, "cooc", pairs), weight_fn=lambda w: np.log1p(w))


def test_from_prefixes_drops_unknown_and_handles_empty():
    s = make([[1, 2, 3]])
    builder = BatchBuilder(SessionStore(s), n_items=5)
    b = builder.from_prefixes([[3, 0, 4, 3], [0, 0], [5]])
    assert b.lengths.tolist() == [3, 0, 1]
    assert b.items.tolist() == [[3, 4, 3], [0, 0, 0], [5, 0, 0]]
    assert sorted(b.x.tolist()) == [3, 4, 5]
    assert b.last_items.tolist() == [3, 0, 5]
    assert torch.equal(b.targets, torch.zeros(3, dtype=torch.long))
