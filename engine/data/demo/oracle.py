"""The demo's oracle: the exact next-item law a generated log was drawn from, for any prefix.

`DemoOracle` reads the planted parameters (`DemoTruth`, truth.npz) and scores session prefixes with
P(next item = x | prefix) as written in the generator's docstring: densely (`scores`) or as an exact
top-k from a few candidates per prefix (`topk`). `ranks` places each example's target in that
top-k, and `oracle_recall` turns those ranks into the evaluator's metrics on a split: the ceiling
any model can reach on the demo, up to sampling noise.

`count_learner(truth, train)` is the same law with the two things a model must learn from data,
the successor probabilities and the item popularity, replaced by their training counts (it keeps the
true mixture weights, funnel and clusters): a learner that knows the generator's structure and sees
only the training sessions. Its share of the oracle says how much of the gap to the oracle is the
finite sample rather than the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.core.errors import InputError
from engine.core.metrics import metrics_from_ranks
from engine.core.schema import Protocol, values
from engine.data.demo.truth import DemoTruth
from engine.data.examples import make_examples
from engine.data.sessions import csr_gather, row_ids

if TYPE_CHECKING:
    from engine.data.sessions import Sessions


class DemoOracle:
    """The exact next-item law of a generated demo log, for any batch of session prefixes.

    Prefixes come in CSR form: raw item ids as in events.csv, event codes 0/1/2 (EVENT_TYPES).
    Score columns follow `raw_ids` (the whole catalogue, ascending raw id).
    """

    def __init__(self, truth: DemoTruth) -> None:
        self.t = truth
        self.raw_ids = truth.raw_ids
        self.n_items = len(truth.raw_ids)
        self.p_same, self.p_repeat, self.p_trans, self.p_cluster, self.p_global = truth.mixture
        self.phi_of = truth.funnel  # funnel mass on the last item, by last event
        self.cl_pop = np.add.reduceat(truth.pop[truth.cl_members], truth.cl_offsets[:-1])
        self.global_order = np.argsort(-truth.pop, kind="stable")

    @classmethod
    def load(cls, truth_path: Path) -> "DemoOracle":
        return cls(DemoTruth.load(Path(truth_path)))

    def index_of(self, raw: np.ndarray) -> np.ndarray:
        """Internal indices of raw item ids; InputError for ids outside this demo's catalogue."""
        raw = np.asarray(raw, dtype=np.int64)
        idx = np.minimum(np.searchsorted(self.raw_ids, raw), self.n_items - 1)
        bad = self.raw_ids[idx] != raw
        if bad.any():
            raise InputError(f"demo oracle: {int(bad.sum())} item id(s) not in the demo catalogue "
                             f"(e.g. {int(raw[bad][0])}); is this the truth.npz of that log?")
        return idx

    # ---- internals on indices ---------------------------------------------------------------
    def _check(self, offsets: np.ndarray) -> np.ndarray:
        offsets = np.asarray(offsets, dtype=np.int64)
        if len(offsets) < 1 or (np.diff(offsets) < 1).any():
            raise InputError("demo oracle: every prefix needs at least one event")
        return offsets

    def _sparse(self, idx: np.ndarray, offsets: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, items, weights) of the mixture terms that are not background, plus last items."""
        b = len(offsets) - 1
        lengths = np.diff(offsets)
        a = idx[offsets[1:] - 1]
        r_rep = row_ids(offsets)
        s_off, s_pos = csr_gather(self.t.succ_offsets, a)
        rows = np.concatenate([r_rep, np.arange(b), row_ids(s_off)])
        items = np.concatenate([idx, a, self.t.succ_items[s_pos]])
        w = np.concatenate([self.p_repeat / lengths[r_rep], np.full(b, self.p_same),
                            self.p_trans * self.t.succ_probs[s_pos]])
        return rows, items, w, a

    def _background(self, items: np.ndarray, clus: np.ndarray) -> np.ndarray:
        """p_global pop(x) + p_cluster pop(x) [cl(x) = clus] / pop(clus)."""
        pop = self.t.pop[items]
        same = self.t.cluster[items] == clus
        return pop * (self.p_global + np.where(same, self.p_cluster / self.cl_pop[clus], 0.0))

    def _topk_idx(self, idx: np.ndarray, events: np.ndarray, offsets: np.ndarray,
                  k: int) -> np.ndarray:
        """Exact top-k (ties: lower raw id first) from a few candidates per prefix.

        Outside the sparse terms a score is background only, which ranks items by popularity within
        the last item's cluster and globally; so the prefix items, the successors, the cluster's
        top k and the global top k always contain the top k.
        """
        n = self.n_items
        if not 1 <= k <= n:
            raise InputError(f"demo oracle: k must be in 1..{n}, got {k}")
        b = len(offsets) - 1
        rows, items, w, a = self._sparse(idx, offsets)
        clus = self.t.cluster[a]
        c_len = np.minimum(k, np.diff(self.t.cl_offsets)[clus])
        c_off = np.concatenate([[0], np.cumsum(c_len)])
        c_pos = np.repeat(self.t.cl_offsets[clus] - c_off[:-1], c_len) + np.arange(c_off[-1])
        rows = np.concatenate([rows, row_ids(c_off), np.repeat(np.arange(b), k)])
        items = np.concatenate([items, self.t.cl_members[c_pos], np.tile(self.global_order[:k], b)])
        w = np.concatenate([w, np.zeros(c_off[-1] + b * k)])
        key, inv = np.unique(rows * n + items, return_inverse=True)
        u_row, u_item = key // n, key % n
        mix = np.bincount(inv, weights=w, minlength=len(key))
        mix += self._background(u_item, clus[u_row])
        phi = self.phi_of[events[offsets[1:] - 1]][u_row]
        score = (1 - phi) * mix + phi * (u_item == a[u_row])
        order = np.lexsort((u_item, -score, u_row))
        first = np.searchsorted(u_row[order], np.arange(b))
        return u_item[order[first[:, None] + np.arange(k)]]

    # ---- public ------------------------------------------------------------------------------
    def scores(self, items: np.ndarray, events: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """float32[B, n_items]: P(next item = raw_ids[j] | prefix b). Dense: keep B modest."""
        offsets = self._check(offsets)
        idx = self.index_of(items)
        events = np.asarray(events, dtype=np.int64)
        b = len(offsets) - 1
        rows, cols, w, a = self._sparse(idx, offsets)
        clus = self.t.cluster[a]
        out = np.broadcast_to(self.p_global * self.t.pop, (b, self.n_items)).copy()
        c_off, c_pos = csr_gather(self.t.cl_offsets, clus)
        members = self.t.cl_members[c_pos]
        c_rows = row_ids(c_off)
        out[c_rows, members] += self.p_cluster * self.t.pop[members] / self.cl_pop[clus[c_rows]]
        np.add.at(out, (rows, cols), w)
        phi = self.phi_of[events[offsets[1:] - 1]]
        out *= (1 - phi)[:, None]
        out[np.arange(b), a] += phi
        return out.astype(np.float32)

    def topk(self, items: np.ndarray, events: np.ndarray, offsets: np.ndarray,
             k: int = 10) -> np.ndarray:
        """int64[B, k]: raw ids of the k most likely next items of each prefix, best first."""
        offsets = self._check(offsets)
        idx = self._topk_idx(self.index_of(items), np.asarray(events, dtype=np.int64),
                             offsets, k)
        return self.raw_ids[idx]


    def ranks(self, sessions: "Sessions", examples: np.ndarray, k: int = 10,
              chunk_events: int = 1 << 20) -> np.ndarray:
        """float64[N]: rank of each example's target in the oracle's top-k (position + 1), inf
        when the target is not in it; the input of `engine.core.metrics.metrics_from_ranks`.

        `sessions` hold raw item ids; `examples` are (session, prefix length) pairs as made by
        `make_examples`. Prefixes are gathered in chunks of about `chunk_events` events, so memory
        stays bounded whatever the number of examples.
        """
        if not 1 <= k <= self.n_items:
            raise InputError(f"demo oracle: k must be in 1..{self.n_items}, got {k}")
        examples = np.asarray(examples, dtype=np.int64).reshape(-1, 2)
        sid, p_len = examples[:, 0], examples[:, 1]
        if ((p_len < 1) | (p_len >= sessions.lengths[sid])).any():
            raise InputError("demo oracle: every example needs a non-empty prefix and a next item")
        idx = self.index_of(sessions.items)
        events = np.asarray(sessions.events, dtype=np.int64)
        begin = sessions.offsets[sid]
        target = idx[begin + p_len]
        ranks = np.full(len(examples), np.inf)
        cum = np.cumsum(p_len)
        lo = 0
        while lo < len(examples):  # a bounded number of chunks, each fully vectorised
            hi = max(lo + 1, int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + chunk_events)))
            ln = p_len[lo:hi]
            off = np.concatenate([[0], np.cumsum(ln)])
            pos = np.repeat(begin[lo:hi] - off[:-1], ln) + np.arange(off[-1])
            match = self._topk_idx(idx[pos], events[pos], off, k) == target[lo:hi, None]
            ranks[lo:hi] = np.where(match.any(axis=1), match.argmax(axis=1) + 1.0, np.inf)
            lo = hi
        return ranks


def oracle_recall(truth_path: Path, sessions: "Sessions", k: int = 10, protocol: str = "last",
                  chunk_events: int = 1 << 20, known_items: np.ndarray | None = None) -> dict:
    """Recall@k, NDCG@k and MRR@k of the oracle on `sessions` (raw item ids).

    The examples and the metrics are the evaluator's own (`make_examples`, `metrics_from_ranks`),
    so the oracle's numbers compare one to one with a model's: "last" predicts the last item of
    each session of length >= 2, "prefixes" every next item. With no examples the metrics are 0.
    `known_items` (raw ids): only the examples whose target is one of them, the ceiling of a model
    that knows those items (a model's `metrics_known_targets`: the items seen in training).
    """
    if protocol not in values(Protocol):
        raise InputError(f"oracle_recall: unknown protocol {protocol!r}; "
                         f"expected one of {', '.join(values(Protocol))}")
    oracle = DemoOracle.load(truth_path)
    examples = make_examples(sessions, protocol)
    if known_items is not None:
        target = sessions.items[sessions.offsets[examples[:, 0]] + examples[:, 1]]
        examples = examples[np.isin(target, known_items)]
    ranks = oracle.ranks(sessions, examples, k, chunk_events)
    m = metrics_from_ranks(ranks, ks=(k,))
    # None (no examples) reads as 0, as it always has in the pipeline's oracle stage
    return {**{name: m[f"{name}@{k}"] or 0.0 for name in ("recall", "ndcg", "mrr")},
            "n": int(len(ranks)), "protocol": protocol, "k": int(k)}


def count_learner(truth: DemoTruth, train: "Sessions") -> DemoTruth:
    """`truth` with successors and popularity estimated from `train` (raw ids; see the module
    docstring): succ(a, x) = the share of x among the views of another item that follow a view,
    cart or purchase of a; pop(x) = x's share of the training events (items never seen get a tiny
    equal share, so they rank last)."""
    from dataclasses import replace
    oracle = DemoOracle(truth)
    n = oracle.n_items
    idx = oracle.index_of(train.items)
    events = np.asarray(train.events, dtype=np.int64)
    has_prev = np.ones(len(idx), dtype=bool)
    has_prev[train.offsets[:-1]] = False                       # a session's first event
    pos = np.nonzero(has_prev)[0]
    a, x = idx[pos - 1], idx[pos]
    keep = (events[pos] == 0) & (a != x)                       # a view of another item: M's terms
    key, cnt = np.unique(a[keep] * n + x[keep], return_counts=True)
    src = key // n
    per_src = np.bincount(src, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(per_src)]).astype(np.int64)
    probs = cnt / np.bincount(src, weights=cnt, minlength=n)[src]
    pop = np.bincount(idx, minlength=n).astype(np.float64) + 1e-3
    return replace(truth, succ_offsets=offsets, succ_items=(key % n).astype(np.int64), succ_probs=probs,
                   pop=pop / pop.sum())


def oracle_report(truth: Path | DemoTruth, sessions: "Sessions", ks: tuple[int, ...] = (10, 20),
                  known_items: np.ndarray | None = None, chunk_events: int = 1 << 20) -> dict:
    """`oracle_recall` for every protocol and k in `ks` (and, with `known_items`, for the known
    targets too), from one ranking pass: {"<protocol>@<k>": ..., "known_<protocol>@<k>": ...}.

    Equal to calling `oracle_recall` for each, at a fraction of the cost (the pipeline's oracle
    stage made 8 passes; on the xl demo that was 7 minutes): "last" examples are the final prefix
    of each session, the top-k is the head of the exact top-max(ks), and the known-target examples
    are a subset, each taken in the order `oracle_recall` would make them.
    """
    oracle = DemoOracle(truth) if isinstance(truth, DemoTruth) else DemoOracle.load(truth)
    k_max = max(ks)
    examples = make_examples(sessions, Protocol.PREFIXES)
    ranks = oracle.ranks(sessions, examples, k_max, chunk_events)
    n_pref = np.maximum(sessions.lengths - 1, 0)
    # the last example of each session of length >= 2: the end of its block of prefixes
    last = (np.cumsum(n_pref) - 1)[n_pref > 0]
    target = sessions.items[sessions.offsets[examples[:, 0]] + examples[:, 1]]
    known = np.isin(target, known_items) if known_items is not None else None
    out: dict = {}
    for protocol in Protocol:
        sel = last if protocol == Protocol.LAST else np.arange(len(examples))
        for k in ks:
            for prefix, keep in (("", sel), ("known_", None if known is None else sel[known[sel]])):
                if keep is None:
                    continue
                r = ranks[keep]
                m = metrics_from_ranks(np.where(r <= k, r, np.inf), ks=(k,))
                out[f"{prefix}{protocol}@{k}"] = {
                    **{name: m[f"{name}@{k}"] or 0.0 for name in ("recall", "ndcg", "mrr")},
                    "n": int(len(r)), "protocol": str(protocol), "k": int(k)}
    return out
