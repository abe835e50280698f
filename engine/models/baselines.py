"""Non-neural baselines (POP, S-POP, item-kNN, V-SKNN): strong on session data, seconds to build.

All implement the Scorer protocol (`score(batch) -> [B, V+1]`, column 0 = -inf, graph_mode "none")
and are torch modules, so `.to(device)` moves their tables and scoring runs on CPU or CUDA alike.
Scoring is gather/scatter over CSR tables: no Python loop over sessions, items or examples.

Ties: the evaluator counts ties in the target's favour, and kNN scores are 0 for most of the
catalogue, so every baseline adds a small popularity tie-break that makes all V scores distinct.
Scores are float64 so that this tie-break survives next to the primary score.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from engine.core.config import ItemKNNConfig, NoParams, SKNNConfig
from engine.core.schema import Weighting, values
from engine.data.batches import Batch
from engine.data.graph import top_per_row
from engine.data.sessions import Sessions, row_ids

# primary scores are scaled into [0, 1]; the tie-break stays below this
_TIE_EPS = 1e-6
_LOW32 = (1 << 32) - 1   # (b << 32) | id keys: unpacked with shifts, not int64 division


def _pop_tiebreak(train_counts: np.ndarray) -> torch.Tensor:
    """float64 [V+1] in (0, 1], all distinct: higher for more train events, then lower index."""
    counts = np.concatenate([[np.iinfo(np.int64).max], np.asarray(train_counts, dtype=np.int64)])
    order = np.lexsort((np.arange(len(counts)), -counts))
    tb = np.empty(len(counts), dtype=np.float64)
    tb[order] = 1.0 - np.arange(len(counts)) / len(counts)
    return torch.as_tensor(tb)


def _csr_expand(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For CSR `indptr` and a list of row ids: (which input row, position into the values) for
    every stored element of those rows, in order. The core gather of every kNN step."""
    start, end = indptr[rows], indptr[rows + 1]
    counts = end - start
    src = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    first = torch.cumsum(counts, 0) - counts
    pos = start[src] + torch.arange(len(src), device=rows.device) - first[src]
    return src, pos


def _positions(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(1-based position, prefix length) per cell of the padded prefix: position n is the last."""
    L = batch.items.shape[1]
    pos = torch.arange(1, L + 1, device=batch.items.device)[None, :].expand_as(batch.items)
    return pos, batch.lengths[:, None].expand_as(batch.items)


class _Baseline(nn.Module):
    graph_mode = "none"

    def __init__(self, train_counts: np.ndarray) -> None:
        super().__init__()
        self.n_items = len(train_counts)
        self.register_buffer("tiebreak", _pop_tiebreak(train_counts), persistent=False)

    def _finish(self, primary: torch.Tensor) -> torch.Tensor:
        """Scale each row to max 1, add the popularity tie-break, mask padding."""
        top = primary.amax(1, keepdim=True).clamp(min=1e-30)
        scores = primary / top + _TIE_EPS * self.tiebreak
        scores[:, 0] = float("-inf")
        return scores


class Pop(_Baseline):
    """Train popularity; the same list for every session. Score = train count (+ tie-break)."""

    def __init__(self, train_counts: np.ndarray) -> None:
        super().__init__(train_counts)
        counts = torch.as_tensor(np.concatenate([[0], train_counts]), dtype=torch.float64)
        self.register_buffer("counts", counts, persistent=False)

    def score(self, batch: Batch) -> torch.Tensor:
        # counts are integers: a tie-break below 1/2 can only order equal counts
        scores = (self.counts + 0.5 * self.tiebreak).expand(batch.size, -1).clone()
        scores[:, 0] = float("-inf")
        return scores


class SPop(_Baseline):
    """Session popularity: items of the prefix by count, ties by recency (latest first), then the
    rest by train popularity. Score = count + last position / (n + 1) for session items (>= 1), and
    < 1/2 for the others, so a session item always outranks a non-session item."""

    def __init__(self, train_counts: np.ndarray) -> None:
        super().__init__(train_counts)
        counts = torch.as_tensor(np.concatenate([[0], train_counts]), dtype=torch.float64)
        self.register_buffer("backfill", 0.49 * counts / counts.max().clamp(min=1) + 1e-3 * self.tiebreak,
                             persistent=False)

    def score(self, batch: Batch) -> torch.Tensor:
        B, V1 = batch.size, self.n_items + 1
        pos, n = _positions(batch)
        m = batch.mask
        flat = (torch.arange(B, device=m.device)[:, None] * V1 + batch.items)[m]
        count = torch.zeros(B * V1, dtype=torch.float64, device=m.device)
        count.index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64, device=m.device))
        recency = torch.zeros_like(count)
        recency.scatter_reduce_(0, flat, (pos / (n + 1.0))[m].double(), "amax")
        scores = torch.where(count.view(B, V1) > 0, (count + recency).view(B, V1), self.backfill)
        scores[:, 0] = float("-inf")
        return scores


class ItemKNN(_Baseline):
    """Item-kNN on the train co-occurrence graph.

    sim(i, j) = w_ij / (d_i^alpha * d_j^(1-alpha)), d = weighted degree (row sum, self-loop
    included): cosine for alpha = 1/2. Self-loops (repeats inside the window) are kept, so an item
    that is often re-viewed recommends itself. Each item keeps its `neighbors` most similar items
    (0 = all). Session score of j = sum over prefix positions p of decay^(n - p) * sim(item_p, j):
    the last item weighs 1.
    """

    def __init__(self, graph, train_counts: np.ndarray, neighbors: int = 100, decay: float = 0.5,
                 alpha: float = 0.5) -> None:
        super().__init__(train_counts)
        self.decay = decay
        S = graph.similarity(alpha)
        indptr, cols, sim = top_per_row(row_ids(S.indptr), S.indices.astype(np.int64), S.data,
                                        S.shape[0], neighbors)
        self.register_buffer("indptr", torch.as_tensor(indptr), persistent=False)
        self.register_buffer("nbr", torch.as_tensor(cols), persistent=False)
        self.register_buffer("sim", torch.as_tensor(sim), persistent=False)

    def score(self, batch: Batch) -> torch.Tensor:
        B, V1 = batch.size, self.n_items + 1
        pos, n = _positions(batch)
        m = batch.mask
        b = torch.arange(B, device=m.device)[:, None].expand_as(m)[m]
        item = batch.items[m]
        w = torch.pow(torch.tensor(self.decay, dtype=torch.float64, device=m.device), (n - pos)[m])
        src, at = _csr_expand(self.indptr, item)
        primary = torch.zeros(B * V1, dtype=torch.float64, device=m.device)
        primary.index_add_(0, b[src] * V1 + self.nbr[at], w[src] * self.sim[at])
        return self._finish(primary.view(B, V1))


# position weights of the prefix (i = 1..n, n = last) and score weights of neighbours (step = 1 for
# a neighbour sharing the last item); both are monotone, which the vectorised max/last logic needs
WEIGHTINGS = values(Weighting)   # the same names for position and score weights (session-rec's)


def _position_weight(name: str, i: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    i, n = i.double(), n.double()
    if name == "div":
        return i / n
    if name == "linear":
        return (1.0 - 0.1 * (n - i)).clamp(min=0.0)
    if name == "same":
        return torch.ones_like(i)
    if name == "quadratic":
        return (i / n) ** 2
    if name == "log":
        return 1.0 / torch.log10(n - i + 1.7)
    raise ValueError(f"unknown weighting {name!r}; expected one of {', '.join(WEIGHTINGS)}")


def _score_weight(name: str, step: torch.Tensor) -> torch.Tensor:
    step = step.double()
    if name == "div":
        return 1.0 / step
    if name == "linear":
        return (1.0 - 0.1 * step).clamp(min=0.0)
    if name == "same":
        return torch.ones_like(step)
    if name == "quadratic":
        return 1.0 / step ** 2
    if name == "log":
        return 1.0 / torch.log10(step + 1.7)
    raise ValueError(f"unknown score_weighting {name!r}; expected one of {', '.join(WEIGHTINGS)}")


class _Candidates(NamedTuple):
    """Candidate (prefix, train session) pairs of a batch, sorted by (prefix, session recency)."""

    key: torch.Tensor     # long [C]  (b << 32) | session rank
    b: torch.Tensor       # long [C]  the prefix
    inv: torch.Tensor     # long [E]  candidate of each (prefix node, session) entry
    src: torch.Tensor     # long [E]  prefix node of each entry
    col: torch.Tensor     # long [C]  rank from b's most recent candidate (0 = the most recent)

    @property
    def session(self) -> torch.Tensor:
        return self.key & _LOW32


class _SessionNeighbours(_Baseline):
    """Train sessions indexed for session-kNN (V-SKNN, STAN, V-STAN), and the vectorised steps they
    share: prefix nodes, candidate sessions (the `sample` most recent sharing an item; 0 = all),
    the top k by a similarity, and the spread of the neighbours' items.

    Sessions are numbered by recency rank (0 = oldest by last event time, then by position). Tables:
    session -> its distinct items with the item's last 1-based position there (`s_ptr`, `s_items`,
    `s_last`); item -> sessions, each item's list cut to its `sample` most recent (exact: a session
    among the `sample` most recent of the union is among the `sample` most recent sessions of every
    item it shares); each session's last event time (`s_end`, ms); idf = log(S / events of the item)
    as in session-rec.
    """

    def __init__(self, train: Sessions, n_items: int, sample: int) -> None:
        items = train.items.astype(np.int64)
        ok = items > 0
        super().__init__(np.bincount(items[ok], minlength=n_items + 1)[1:])
        self.sample = sample
        S = len(train)
        self.n_sessions = S
        order = np.lexsort((np.arange(S), train.end))
        rank = np.empty(S, dtype=np.int64)
        rank[order] = np.arange(S)
        rows = row_ids(train.offsets)
        position = np.arange(len(items)) - train.offsets[rows] + 1
        # distinct (session rank, item) pairs, sorted, with the item's last position: np.unique of
        # the reversed events finds each pair's last occurrence first
        key = (rank[rows] * (n_items + 1) + items)[ok][::-1]
        key, first = np.unique(key, return_index=True)
        s_last = position[ok][::-1][first]
        s_of, i_of = np.divmod(key, n_items + 1)
        s_ptr = np.zeros(S + 1, dtype=np.int64)
        np.cumsum(np.bincount(s_of, minlength=S), out=s_ptr[1:])
        o = np.lexsort((s_of, i_of))
        i_sorted, s_sorted = i_of[o], s_of[o]
        i_counts = np.bincount(i_sorted, minlength=n_items + 1)
        if sample > 0:
            from_end = np.repeat(np.cumsum(i_counts), i_counts) - 1 - np.arange(len(i_sorted))
            i_sorted, s_sorted = i_sorted[from_end < sample], s_sorted[from_end < sample]
        i_ptr = np.zeros(n_items + 2, dtype=np.int64)
        np.cumsum(np.bincount(i_sorted, minlength=n_items + 1), out=i_ptr[1:])
        ev = np.bincount(items[ok], minlength=n_items + 1).astype(np.float64)
        with np.errstate(divide="ignore"):
            idf = np.where(ev > 0, np.log(max(S, 1) / np.maximum(ev, 1)), 0.0)
        for name, arr in (("s_ptr", s_ptr), ("s_items", i_of), ("s_last", s_last), ("i_ptr", i_ptr),
                          ("i_sess", s_sorted), ("s_end", np.asarray(train.end, np.int64)[order]),
                          ("s_id", np.asarray(train.session_id, np.int64)[order]), ("idf", idf)):
            self.register_buffer(name, torch.as_tensor(arr), persistent=False)

    @staticmethod
    def _prefix_nodes(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distinct (b, item) of the prefixes: (sorted key (b << 32) | item, b, item, 1-based
        position of the item's last occurrence)."""
        pos, _ = _positions(batch)
        m = batch.mask
        b_cell = torch.arange(batch.size, device=m.device)[:, None].expand_as(m)
        key, inv = torch.unique((b_cell[m] << 32) | batch.items[m], return_inverse=True)
        last = torch.zeros(len(key), dtype=torch.long, device=m.device).scatter_reduce_(
            0, inv, pos[m], "amax", include_self=False)
        return key, key >> 32, key & _LOW32, last

    def _candidates(self, B: int, node_b: torch.Tensor, node_item: torch.Tensor) -> _Candidates:
        src, at = _csr_expand(self.i_ptr, node_item)
        key, inv = torch.unique((node_b[src] << 32) | self.i_sess[at], return_inverse=True)
        cb = key >> 32
        counts = torch.bincount(cb, minlength=B)
        col = (torch.cumsum(counts, 0) - 1)[cb] - torch.arange(len(cb), device=cb.device)
        return _Candidates(key, cb, inv, src, col)

    def _top_k(self, B: int, c: _Candidates, sim: torch.Tensor, k: int) -> torch.Tensor:
        """Ids of the neighbours: among b's `sample` most recent candidates, the `k` most similar
        with sim > 0; ties (after rounding sim / b's best to 1e-9) go to the more recent."""
        kept = torch.nonzero(c.col < self.sample).squeeze(1) if self.sample > 0 else \
            torch.arange(len(c.b), device=c.b.device)
        kb = c.b[kept]
        best = torch.zeros(B, dtype=torch.float64, device=sim.device).scatter_reduce_(0, kb, sim[kept], "amax")
        # relative rounding: sums of the same weights in another order (or CUDA atomics) still tie,
        # and sims that are all tiny (old sessions under a time decay) keep their order
        val = torch.round(sim[kept] / best[kb].clamp(min=1e-300), decimals=9)
        # candidates come in (b, oldest first) order: from the reversed order, two stable 1-D
        # sorts give (b, -sim, newest first) without a dense [B, candidates] matrix (sample 0 can
        # mean tens of thousands of candidates per prefix)
        o = torch.arange(len(kept) - 1, -1, -1, device=kb.device)
        o = o[torch.sort(val[o], descending=True, stable=True).indices]
        o = o[torch.sort(kb[o], stable=True).indices]
        counts = torch.bincount(kb, minlength=B)
        rank = torch.arange(len(o), device=o.device) - (torch.cumsum(counts, 0) - counts)[kb[o]]
        return kept[o[(rank < k) & (val[o] > 0)]]

    def _spread(self, c: _Candidates, nb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (neighbour, distinct item) pair: (which neighbour, position into s_items/s_last)."""
        return _csr_expand(self.s_ptr, c.session[nb])

    def _score_votes(self, batch: Batch, b: torch.Tensor, session: torch.Tensor, item: torch.Tensor,
                     value: torch.Tensor) -> torch.Tensor:
        """Scores from `votes`: each item's summed votes, times the idf factor, scaled per row."""
        V1 = self.n_items + 1
        primary = torch.zeros(batch.size * V1, dtype=torch.float64, device=batch.items.device)
        primary.index_add_(0, b * V1 + item, value)
        return self._finish(primary.view(batch.size, V1) * self.item_factor)

    def voters(self, batch: Batch, cand: torch.Tensor, n: int = 5) -> list[list[list[tuple[int, float, float]]]]:
        """For each row and candidate (long [B, K]): the neighbour sessions that voted for it, the
        heaviest first, at most `n`: (train session id, vote, share of the item's votes)."""
        b, session, item, value = self.votes(batch)
        K = cand.shape[1]
        key = b * (self.n_items + 1) + item
        want = (torch.arange(batch.size, device=cand.device)[:, None] * (self.n_items + 1) + cand).reshape(-1)
        order = torch.argsort(key)
        key, session, value = key[order], session[order], value[order]
        lo = torch.searchsorted(key, want).tolist()
        hi = torch.searchsorted(key, want, right=True).tolist()
        out: list[list[list[tuple[int, float, float]]]] = []
        for r in range(batch.size):
            row = []
            for j in range(K):
                a, z = lo[r * K + j], hi[r * K + j]
                v, s = value[a:z], session[a:z]
                top = torch.argsort(v, descending=True)[:n]
                total = float(v.sum()) or 1.0
                row.append([(int(self.s_id[int(s[t])]), float(v[t]), float(v[t]) / total) for t in top.tolist()])
            out.append(row)
        return out


class SessionKNN(_SessionNeighbours):
    """V-SKNN (Ludewig & Jannach), as in session-rec's VMContextKNN, vectorised over a batch.

    1. Prefix vector: item -> position weight of its last occurrence (`weighting`, "div" = i/n: the
       last item 1, linearly decaying to 1/n).
    2. Candidates: train sessions sharing an item with the prefix, of which the `sample` most recent
       (by last event time; 0 = all).
    3. Similarity = dot product of the prefix vector with the candidate's binary item vector; the
       top `k` candidates are the neighbours (ties: the more recent first).
    4. Item score = sum over neighbours containing it of sim * score_weight(step) *
       (1 + idf * log(S / train count of the item)); step = distance from the end of the prefix of
       the latest prefix item the neighbour shares (1 = the last item). Prefix items are not removed.
    """

    def __init__(self, train: Sessions, n_items: int, k: int = 100, sample: int = 500,
                 weighting: str = "div", score_weighting: str = "div", idf: float = 0.0) -> None:
        super().__init__(train, n_items, sample)
        _position_weight(weighting, torch.ones(1), torch.ones(1))   # validate names early
        _score_weight(score_weighting, torch.ones(1))
        self.k, self.idf_weight = k, idf
        self.weighting, self.score_weighting = weighting, score_weighting
        self.register_buffer("item_factor", 1.0 + idf * self.idf, persistent=False)

    def score(self, batch: Batch) -> torch.Tensor:
        return self._score_votes(batch, *self.votes(batch))

    def votes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every (neighbour, item) vote: (prefix row, neighbour's recency rank, item, value)."""
        B = batch.size
        # 1. prefix nodes; both weights are monotone in the position, so the last occurrence's
        # weights are the node's
        _, node_b, node_item, last = self._prefix_nodes(batch)
        node_n = batch.lengths[node_b]
        w_pos = _position_weight(self.weighting, last, node_n)
        w_step = _score_weight(self.score_weighting, node_n - last + 1)
        # 2. candidates, with the similarity and the step weight of the latest shared prefix item
        c = self._candidates(B, node_b, node_item)
        sim = torch.zeros(len(c.key), dtype=torch.float64, device=last.device).index_add_(0, c.inv, w_pos[c.src])
        step_w = torch.zeros_like(sim).scatter_reduce_(0, c.inv, w_step[c.src], "amax", include_self=False)
        # 3. neighbours; 4. their items: each adds sim * step weight
        nb = self._top_k(B, c, sim, self.k)
        src, at = self._spread(c, nb)
        return c.b[nb][src], c.session[nb][src], self.s_items[at], (sim[nb] * step_w[nb])[src]


# ---- builders (see engine.models.registry) -------------------------------------------------------
def _counts(data) -> np.ndarray:
    return np.asarray(data.items.train_counts)


def build_pop(cfg: NoParams, data) -> Pop:
    return Pop(_counts(data))


def build_spop(cfg: NoParams, data) -> SPop:
    return SPop(_counts(data))


def build_itemknn(cfg: ItemKNNConfig, data) -> ItemKNN:
    return ItemKNN(data.graph, _counts(data), neighbors=cfg.neighbors, decay=cfg.decay, alpha=cfg.alpha)


def build_sknn(cfg: SKNNConfig, data) -> SessionKNN:
    return SessionKNN(data.train, data.n_items, k=cfg.k, sample=cfg.sample, weighting=cfg.weighting,
                      score_weighting=cfg.score_weighting, idf=cfg.idf)
