"""The demo generator: file format, determinism, planted structure and the oracle's exact law."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.core.errors import InputError
from engine.core.metrics import metrics_from_ranks
from engine.data.demo import CSV_HEADER, DEMO_SIZES, TRUTH_VERSION, DemoOracle, DemoTruth, generate_demo, oracle_recall
from engine.data.examples import make_examples
from engine.data.sessions import EVENT_TYPES, Sessions

MIN = 60_000


def _generate(out: Path, size: str, seed: int = 0, **kw) -> dict:
    """The demo into folder `out`, with a workspace's file names."""
    return generate_demo(out / "events.csv", out / "truth.npz", size, seed=seed, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny")
    return out, _generate(out, "tiny", seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("small")
    return out, _generate(out, "small", seed=0)


def _log(out: Path) -> pd.DataFrame:
    """The log sorted by (visitor, time), with event codes."""
    df = pd.read_csv(out / "events.csv")
    df["code"] = df["event"].map({e: i for i, e in enumerate(EVENT_TYPES)}).astype(np.int8)
    return df.sort_values(["visitorid", "timestamp"], kind="stable").reset_index(drop=True)


def _sessionize(df: pd.DataFrame) -> Sessions:
    """30-minute sessionizer (all lengths kept), sessions in start-time order."""
    vis, ts = df["visitorid"].to_numpy(), df["timestamp"].to_numpy()
    new = np.ones(len(df), dtype=bool)
    new[1:] = (vis[1:] != vis[:-1]) | (np.diff(ts) > 30 * MIN)
    offsets = np.append(np.flatnonzero(new), len(df)).astype(np.int64)
    s = Sessions(np.arange(len(offsets) - 1), vis[offsets[:-1]], ts[offsets[:-1]],
                 ts[offsets[1:] - 1], offsets, df["itemid"].to_numpy(),
                 df["code"].to_numpy(), ts)
    return s.take(np.argsort(s.start, kind="stable"))


def test_unknown_size_lists_valid_ones(tmp_path):
    with pytest.raises(InputError, match="tiny, small, full"):
        _generate(tmp_path, "huge")
    assert not (tmp_path / "events.csv").exists()


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny):
    out, stats = tiny
    _generate(tmp_path / "a", "tiny", seed=0)
    _generate(tmp_path / "b", "tiny", seed=1)
    assert (tmp_path / "a" / "events.csv").read_bytes() == (out / "events.csv").read_bytes()
    assert (tmp_path / "b" / "events.csv").read_bytes() != (out / "events.csv").read_bytes()
    with np.load(out / "truth.npz") as x, np.load(tmp_path / "a" / "truth.npz") as y:
        assert set(x.files) == set(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k])
    assert not [p for p in tmp_path.rglob(".tmp-*")]  # atomic writes leave nothing behind


def test_header_and_field_formats(tiny):
    out, stats = tiny
    lines = (out / "events.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER == "timestamp,visitorid,event,itemid,transactionid"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == stats["events"] and all(len(r) == 5 for r in rows)
    for ts, vis, ev, item, tx in rows:
        assert len(ts) == 13 and ts.isdigit() and vis.isdigit() and item.isdigit()
        assert ev in EVENT_TYPES
        assert (tx.isdigit() if ev == "transaction" else tx == "")
    ts = np.array([int(r[0]) for r in rows])
    assert (np.diff(ts) >= 0).all()  # a server log: time order
    # RetailRocket's window: 2015-05-03 .. 2015-09-18; tiny spans 6 weeks
    assert 1430622000000 <= ts.min() and ts.max() <= 1442545200000
    assert ts.max() - ts.min() >= 21 * 86_400_000
    assert stats["start"] == ts.min() and stats["end"] == ts.max()


@pytest.mark.parametrize("size, tol", [("tiny", 2.5), ("small", 1.0)])
def test_event_shares_like_retailrocket(size, tol, tiny, small):
    out, stats = {"tiny": tiny, "small": small}[size]
    df = pd.read_csv(out / "events.csv")
    shares = df["event"].value_counts(normalize=True)
    # RetailRocket: 96.7% views, 2.5% addtocart, 0.8% transactions (tolerance in points)
    for name, target in zip(EVENT_TYPES, (96.7, 2.5, 0.8)):
        assert abs(100 * shares[name] - target) < tol, (name, shares[name])
        assert abs(stats["event_shares"][name] - shares[name]) < 1e-4


def test_sessions_gaps_and_counts(small):
    out, stats = small
    df = _log(out)
    vis, ts = df["visitorid"].to_numpy(), df["timestamp"].to_numpy()
    same = vis[1:] == vis[:-1]
    gaps = np.diff(ts)[same]
    # inside a session: 1 s .. 25 min; between sessions: more than 31 min; nothing in between
    assert gaps.min() >= 1000
    assert not ((gaps > 25 * MIN) & (gaps <= 31 * MIN)).any()
    between = gaps > 31 * MIN
    assert between.sum() > 1000 and np.median(gaps[between]) > 3 * 3_600_000  # hours/days apart
    s = _sessionize(df)
    # 30-min sessionizing recovers exactly the generated sessions
    assert len(s) == stats["sessions"] and (s.lengths >= 3).sum() == stats["sessions_min3"]
    assert s.lengths.max() <= DEMO_SIZES["small"].max_len
    per_visitor = np.bincount(np.unique(s.visitor, return_inverse=True)[1])
    assert (per_visitor >= 3).sum() > 100
    assert df["visitorid"].nunique() == stats["visitors"]
    assert 15_000 <= stats["sessions_min3"] <= 30_000 and 2000 <= stats["items"] <= 6000


def test_funnel_order(small):
    df = _log(small[0])
    vis, item, code = (df[c].to_numpy() for c in ("visitorid", "itemid", "code"))
    for ev in (1, 2):  # addtocart follows a view of it, transaction follows an addtocart of it
        i = np.flatnonzero(code == ev)
        assert len(i) > 100 and (i > 0).all()
        assert (vis[i - 1] == vis[i]).all() and (item[i - 1] == item[i]).all()
        assert (code[i - 1] == ev - 1).all()


def test_planted_successors_dominate(small):
    out, _ = small
    df = _log(out)
    oracle = DemoOracle.load(out / "truth.npz")
    s = _sessionize(df)
    idx = oracle.index_of(s.items)
    # view -> view transitions inside sessions, to a different item
    same_sess = np.zeros(s.n_events, dtype=bool)
    same_sess[:-1] = np.repeat(np.arange(len(s)), s.lengths)[:-1] == np.repeat(
        np.arange(len(s)), s.lengths)[1:]
    i = np.flatnonzero(same_sess & (s.events == 0))
    i = i[(s.events[i + 1] == 0) & (idx[i] != idx[i + 1])]
    a, b = idx[i], idx[i + 1]
    n = oracle.n_items
    pairs, counts = np.unique(a * n + b, return_counts=True)
    src, dst = pairs // n, pairs % n
    order = np.lexsort((-counts, src))  # per source item, most frequent successor first
    first = np.flatnonzero(np.r_[True, src[order][1:] != src[order][:-1]])
    top_src, top_dst = src[order][first], dst[order][first]
    support = np.bincount(a, minlength=n)[top_src]
    top_src, top_dst = top_src[support >= 30], top_dst[support >= 30]
    t = oracle.t
    planted = {(int(x), int(y)) for x, o0, o1 in zip(range(n), t.succ_offsets[:-1],
                                                       t.succ_offsets[1:])
               for y in t.succ_items[o0:o1]}
    hit = np.mean([(int(x), int(y)) in planted for x, y in zip(top_src, top_dst)])
    # a random item of the own cluster would be a planted successor this often
    chance = np.diff(t.succ_offsets).mean() / np.diff(t.cl_offsets).mean()
    assert len(top_src) > 300
    assert hit > 0.9 > 5 * chance  # measured: 0.995 vs 0.11 (and 0.0015 over the catalogue)


def _hand_law(oracle: DemoOracle, prefix: list[int], events: list[int]) -> np.ndarray:
    """P(next item) over the catalogue, written straight from the module docstring."""
    t = oracle.t
    p_same, p_repeat, p_trans, p_cluster, p_global, f_cart, f_buy = t.params
    idx = [int(np.searchsorted(t.raw_ids, r)) for r in prefix]
    a = idx[-1]
    m = p_global * t.pop.copy()
    in_cluster = t.cluster == t.cluster[a]
    m[in_cluster] += p_cluster * t.pop[in_cluster] / t.pop[in_cluster].sum()
    m[a] += p_same
    for x in idx:
        m[x] += p_repeat / len(idx)
    lo, hi = t.succ_offsets[a], t.succ_offsets[a + 1]
    m[t.succ_items[lo:hi]] += p_trans * t.succ_probs[lo:hi]
    phi = (f_cart, f_buy, 0.0)[events[-1]]
    out = (1 - phi) * m
    out[a] += phi
    return out


def test_oracle_topk_and_scores_match_the_planted_law(tiny):
    out, _ = tiny
    oracle = DemoOracle.load(out / "truth.npz")
    t = oracle.t
    a = int(np.argmax(np.diff(t.succ_offsets)))  # an item with many successors
    b = int(t.succ_items[t.succ_offsets[a]])
    raw = [int(t.raw_ids[a]), int(t.raw_ids[b]), int(t.raw_ids[a])]
    for ev in ([0, 0, 0], [0, 0, 1], [0, 1, 2]):
        law = _hand_law(oracle, raw, ev)
        assert law.sum() == pytest.approx(1.0)
        expected = t.raw_ids[np.lexsort((np.arange(len(law)), -law))[:10]]
        got = oracle.topk(np.array(raw), np.array(ev), np.array([0, 3]), k=10)
        np.testing.assert_array_equal(got[0], expected)
        np.testing.assert_allclose(oracle.scores(np.array(raw), np.array(ev), np.array([0, 3]))[0],
                                   law, rtol=1e-5, atol=1e-9)
    # hand-checked value: after "view a, view b, view a", P(next = a) =
    # f_cart + (1 - f_cart) (p_same + p_repeat 2/3 + succ(a, a)=0 + background(a))
    p_same, p_repeat, _, p_cluster, p_global, f_cart, _ = t.params
    in_c = t.cluster == t.cluster[a]
    bg = t.pop[a] * (p_global + p_cluster / t.pop[in_c].sum())
    want = f_cart + (1 - f_cart) * (p_same + p_repeat * 2 / 3 + bg)
    got = oracle.scores(np.array(raw), np.array([0, 0, 0]), np.array([0, 3]))[0]
    assert got[a] == pytest.approx(want, rel=1e-6)
    # after an addtocart, the transaction of that item is the single most likely next event
    assert oracle.topk(np.array(raw), np.array([0, 0, 1]), np.array([0, 3]), k=1)[0, 0] == raw[-1]


def test_topk_agrees_with_dense_scores_on_many_prefixes(tiny):
    out, _ = tiny
    oracle = DemoOracle.load(out / "truth.npz")
    s = _sessionize(_log(out))
    s = s.take(s.lengths >= 2)
    b = 200
    off = s.offsets[: b + 1]  # the first b sessions, whole, as prefixes
    items, events = s.items[: off[-1]], s.events[: off[-1]]
    dense = oracle.scores(items, events, off)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-5)
    top = oracle.index_of(oracle.topk(items, events, off, k=10)).reshape(b, 10)
    top_scores = np.take_along_axis(dense, top, axis=1)
    assert (np.diff(top_scores, axis=1) <= 1e-7).all()
    kth = np.sort(dense, axis=1)[:, -10]
    np.testing.assert_allclose(top_scores[:, -1], kth, rtol=1e-5)


def test_oracle_recall_beats_popularity_on_tiny(tiny):
    out, _ = tiny
    s = _sessionize(_log(out))
    s = s.take(s.lengths >= 3)
    n = len(s)
    train, test = s.take(np.arange(int(0.7 * n))), s.take(np.arange(int(0.85 * n), n))
    last = oracle_recall(out / "truth.npz", test, k=10, protocol="last")
    pref = oracle_recall(out / "truth.npz", test, k=10, protocol="prefixes")
    assert last["n"] == len(test) and pref["n"] == int((test.lengths - 1).sum())
    assert last["protocol"] == "last" and last["k"] == 10 and 0 < last["mrr"] <= last["recall"]
    items, counts = np.unique(train.items, return_counts=True)
    pop_top = items[np.argsort(-counts, kind="stable")[:10]]
    pop_recall = np.isin(test.items[test.offsets[1:] - 1], pop_top).mean()
    assert last["recall"] > pop_recall + 0.35 and pref["recall"] > 0.6
    # chunking changes nothing
    assert oracle_recall(out / "truth.npz", test, protocol="prefixes", chunk_events=50) == pref
    # known targets: every item known = all examples; only the last items of the test sessions =
    # exactly the "last" examples whose target is one of them
    assert oracle_recall(out / "truth.npz", test, k=10, protocol="last", known_items=test.items) == last
    lasts = np.unique(test.items[test.offsets[1:] - 1])
    some = oracle_recall(out / "truth.npz", test, k=10, protocol="prefixes", known_items=lasts)
    targets = test.items[test.offsets[make_examples(test, "prefixes")[:, 0]] + make_examples(test, "prefixes")[:, 1]]
    assert some["n"] == int(np.isin(targets, lasts).sum()) < pref["n"]
    assert oracle_recall(out / "truth.npz", test, k=10, protocol="last", known_items=np.array([], np.int64))["n"] == 0


def test_oracle_rejects_bad_input(tiny, tmp_path):
    out, _ = tiny
    oracle = DemoOracle.load(out / "truth.npz")
    with pytest.raises(InputError, match="not in the demo catalogue"):
        oracle.topk(np.array([-5]), np.array([0]), np.array([0, 1]))
    with pytest.raises(InputError, match="at least one event"):
        oracle.topk(np.array([int(oracle.raw_ids[0])]), np.array([0]), np.array([0, 0, 1]))
    with pytest.raises(InputError, match="protocol"):
        oracle_recall(out / "truth.npz", Sessions.empty(), protocol="all")
    with pytest.raises(InputError, match="cannot read"):
        DemoOracle.load(tmp_path / "missing.npz")


def test_progress_is_reported(tmp_path):
    seen = []
    _generate(tmp_path, "tiny", seed=3, progress=seen.append)
    assert seen and seen[-1].stage == "demo" and seen[-1].fraction == 1.0
    assert len(seen) <= DEMO_SIZES["tiny"].max_len + 1


def test_writes_exactly_the_given_paths(tmp_path):
    log, truth = tmp_path / "a" / "log.csv", tmp_path / "b" / "planted.npz"
    stats = generate_demo(log, truth, "tiny", seed=0)
    # the log, its truth, and beside the log its items in RetailRocket's layout
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "a/category_tree.csv", "a/item_properties.csv", "a/log.csv", "b/planted.npz"]
    assert len(log.read_text().splitlines()) == stats["events"] + 1
    assert DemoOracle.load(truth).n_items == DEMO_SIZES["tiny"].n_items
    with pytest.raises(InputError, match="two paths"):
        generate_demo(log, log, "tiny")


def test_oracle_ranks_and_metrics_on_a_hand_made_case(tiny):
    """Targets placed by hand at positions 1, 3 and outside the top 10 of the oracle's list."""
    out, _ = tiny
    truth = out / "truth.npz"
    oracle = DemoOracle.load(truth)
    raw = oracle.raw_ids

    def top(prefix: list[int]) -> np.ndarray:  # the oracle's top 10 after a prefix of views
        return oracle.topk(np.array(prefix), np.zeros(len(prefix), np.int8),
                           np.array([0, len(prefix)]), k=10)[0]

    a, b, c = int(raw[0]), int(raw[1]), int(raw[2])
    t_a = top([a])
    miss = int(next(x for x in raw if x not in top([c])))
    t2 = int(top([a, int(t_a[0])])[4])
    s = Sessions.from_lists([[a, int(t_a[0])], [b, int(top([b])[2])], [c, miss], [a],
                             [a, int(t_a[0]), t2]], np.int64)

    last = make_examples(s, "last")
    assert last.tolist() == [[0, 1], [1, 1], [2, 1], [4, 2]]
    ranks = oracle.ranks(s, last, k=10)
    np.testing.assert_array_equal(ranks, [1, 3, np.inf, 5])
    got = oracle_recall(truth, s, k=10, protocol="last")
    assert got == {"recall": 0.75, "ndcg": pytest.approx((1 + 1 / 2 + 1 / math.log2(6)) / 4),
                   "mrr": pytest.approx((1 + 1 / 3 + 1 / 5) / 4), "n": 4, "protocol": "last",
                   "k": 10}
    m = metrics_from_ranks(ranks, ks=(10,))
    assert (got["recall"], got["ndcg"], got["mrr"]) == (m["recall@10"], m["ndcg@10"], m["mrr@10"])

    # "prefixes" adds the first step of the last session (its target is a's top item: rank 1)
    pref = make_examples(s, "prefixes")
    np.testing.assert_array_equal(oracle.ranks(s, pref, k=10), [1, 3, np.inf, 1, 5])
    got = oracle_recall(truth, s, k=10, protocol="prefixes", chunk_events=2)
    assert got["n"] == 5 and got["recall"] == 0.8
    assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 + 1 / 5) / 5)
    # a cutoff below a rank turns it into a miss
    assert oracle_recall(truth, s, k=2, protocol="last")["recall"] == 0.25
    assert oracle_recall(truth, Sessions.empty(), k=10) == {
        "recall": 0.0, "ndcg": 0.0, "mrr": 0.0, "n": 0, "protocol": "last", "k": 10}
    with pytest.raises(InputError, match="non-empty prefix"):
        oracle.ranks(s, np.array([[3, 0]]), k=10)


def test_truth_from_another_generator_version_is_refused(tiny, tmp_path):
    out, _ = tiny
    with np.load(out / "truth.npz") as z:
        arrays = {k: z[k] for k in z.files}
    truth = DemoTruth.load(out / "truth.npz")
    assert truth.params.tolist() == [*truth.mixture, *truth.funnel[:2]] and truth.funnel[2] == 0
    older = dict(arrays, version=np.array(TRUTH_VERSION - 1))
    unversioned = {k: v for k, v in arrays.items() if k != "version"}
    for name, bad in (("older.npz", older), ("unversioned.npz", unversioned)):
        np.savez(tmp_path / name, **bad)
        with pytest.raises(InputError, match="regenerate the demo"):
            DemoOracle.load(tmp_path / name)


def test_count_learner_counts_successors_and_popularity_in_train(tiny):
    from dataclasses import replace

    from engine.data.demo.oracle import count_learner
    out, _ = tiny
    truth = DemoTruth.load(out / "truth.npz")
    raw = truth.raw_ids
    A, B, C = raw[0], raw[1], raw[2]
    # session 1: view A, view B, view A, cart A (not a view: no pair), view C; session 2: view A,
    # view A (the same item: p_same's term, not a successor), view B
    train = Sessions.from_lists([[A, B, A, A, C], [A, A, B]], item_dtype=np.int64)
    train = replace(train, events=np.array([0, 0, 0, 1, 0, 0, 0, 0], dtype=np.int8))
    hat = count_learner(truth, train)
    succ = {int(i): {int(x): round(float(p), 6) for x, p in
                     zip(hat.succ_items[hat.succ_offsets[i]:hat.succ_offsets[i + 1]],
                         hat.succ_probs[hat.succ_offsets[i]:hat.succ_offsets[i + 1]])}
            for i in range(3)}
    # A -> B twice (sessions 1 and 2), A(cart) -> C once; B -> A once
    assert succ == {0: {1: round(2 / 3, 6), 2: round(1 / 3, 6)}, 1: {0: 1.0}, 2: {}}
    assert hat.succ_offsets[-1] == 3 and len(hat.succ_offsets) == len(raw) + 1
    n = len(raw)
    counts = np.full(n, 1e-3)
    counts[:3] += [5, 2, 1]                                        # A 5 times, B twice, C once
    assert np.allclose(hat.pop, counts / counts.sum())
    assert np.array_equal(hat.params, truth.params) and np.array_equal(hat.cluster, truth.cluster)
    # the learned successors enter the law as the true ones do: after a view of A, swapping A's two
    # successors' shares moves B's probability by (1 - f_cart) * p_trans * (2/3 - 1/3)
    swapped = replace(hat, succ_probs=hat.succ_probs[[1, 0, 2]])
    args = (np.array([A]), np.array([0]), np.array([0, 1]))
    diff = DemoOracle(hat).scores(*args)[0] - DemoOracle(swapped).scores(*args)[0]
    p_trans, f_cart = truth.mixture[2], truth.funnel[0]
    assert diff[1] == pytest.approx((1 - f_cart) * p_trans / 3) and diff[2] == pytest.approx(-diff[1])
    assert np.allclose(np.delete(diff, [1, 2]), 0)
