"""STAN and V-STAN: session-kNN aware of sequence and time, vectorised over a batch.

STAN (Garg et al., SIGIR 2019), as in session-rec's `knn/stan.py`, for a prefix of n items at
time `now` (the time of its last event; for typed prefixes the last train event):

1. Prefix weights: each distinct item weighs w = exp((p - n) / lambda_spw), p = 1-based position
   of its last occurrence (session-rec: `lambda_spw`, "session position weight").
2. Candidates: the `sample` most recent train sessions (by last event) sharing an item with the
   prefix (session-rec: `sample_size`, "recent" sampling; 0 = all).
3. Similarity: cosine of the weighted prefix and the candidate's binary item set,
   sum of w over shared items / (sqrt(sum of w^2) * sqrt(distinct items of the candidate)),
   times exp(-(now - last event of the candidate) / lambda_snh), lambda in days (session-rec:
   `lambda_snh`, "session neighbourhood"). The `k` most similar are the neighbours (`k`; ties: the
   more recent first; session-rec leaves them to set order).
4. Item score: sum over neighbours holding it of sim * exp(-|p_item - p*| / lambda_inh), with
   p_item the item's last position in the neighbour and p* the last position there of any prefix
   item (session-rec: `lambda_inh`, "item neighbourhood"). Prefix items are kept (`remind`).

V-STAN (Ludewig et al. 2021, session-rec's `knn/vstan.py` VSKNN_STAN) multiplies each neighbour's
contribution by exp((p_s - n) / lambda_ipw), p_s = the latest prefix position holding an item of
the neighbour (`lambda_ipw`), and each item's score by 1 + lambda_idf * log(S / train events of the
item) (`lambda_idf`; S = train sessions). Its similarity is the cosine above: session-rec's
`similarity` argument is stored but not read by vstan.py, so it is not a parameter here.

A lambda of 0 turns its factor off (session-rec: None). Scores are scaled to max 1 per row plus the
popularity tie-break of every baseline.
"""

from __future__ import annotations

import torch

from engine.core.config import STANConfig, VSTANConfig
from engine.data.batches import Batch
from engine.data.sessions import Sessions
from engine.models.baselines import _SessionNeighbours

_DAY_MS = 86_400_000.0


def _decay(x: torch.Tensor, lam: float) -> torch.Tensor:
    """exp(x / lam) as float64; all ones when lam is 0 (the factor is off)."""
    return torch.exp(x.double() / lam) if lam > 0 else torch.ones_like(x, dtype=torch.float64)


class STAN(_SessionNeighbours):
    """STAN, or V-STAN when `lambda_ipw` / `lambda_idf` are given (see the module doc)."""

    def __init__(self, train: Sessions, n_items: int, k: int = 500, sample: int = 5000,
                 lambda_spw: float = 1.25, lambda_snh: float = 80.0, lambda_inh: float = 5.0,
                 lambda_ipw: float = 0.0, lambda_idf: float = 0.0) -> None:
        super().__init__(train, n_items, sample)
        self.k = k
        self.lambda_spw, self.lambda_snh, self.lambda_inh = lambda_spw, lambda_snh, lambda_inh
        self.lambda_ipw, self.lambda_idf = lambda_ipw, lambda_idf
        self.t_last = int(self.s_end.max()) if len(train) else 0
        self.register_buffer("item_factor", 1.0 + lambda_idf * self.idf, persistent=False)

    def score(self, batch: Batch) -> torch.Tensor:
        return self._score_votes(batch, *self.votes(batch))

    def votes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every (neighbour, item) vote: (prefix row, neighbour's recency rank, item, value)."""
        B = batch.size
        dev = batch.items.device
        node_key, node_b, node_item, last = self._prefix_nodes(batch)
        n = batch.lengths
        # 1. prefix weights and each prefix's norm
        w = _decay(last - n[node_b], self.lambda_spw)
        norm = torch.zeros(B, dtype=torch.float64, device=dev).index_add_(0, node_b, w * w).sqrt()
        # 2-3. candidates and their similarity
        c = self._candidates(B, node_b, node_item)
        s = c.session
        dot = torch.zeros(len(c.key), dtype=torch.float64, device=dev).index_add_(0, c.inv, w[c.src])
        size = (self.s_ptr[s + 1] - self.s_ptr[s]).double()
        sim = dot / (norm[c.b] * size.sqrt())
        if self.lambda_snh > 0:
            now = batch.now if batch.now is not None else torch.full((B,), self.t_last, device=dev)
            sim = sim * _decay(-(now[c.b] - self.s_end[s]).double() / _DAY_MS, self.lambda_snh)
        nb = self._top_k(B, c, sim, self.k)
        contrib = sim[nb]
        if self.lambda_ipw > 0:
            shared = torch.zeros(len(c.key), dtype=torch.long, device=dev).scatter_reduce_(
                0, c.inv, last[c.src], "amax", include_self=False)
            contrib = contrib * _decay(shared[nb] - n[c.b[nb]], self.lambda_ipw)
        # 4. the neighbours' items
        src, at = self._spread(c, nb)
        nb_b, item, pos = c.b[nb][src], self.s_items[at], self.s_last[at]
        value = contrib[src]
        if self.lambda_inh > 0:
            # p*: the last position in the neighbour of an item the prefix holds
            key = (nb_b << 32) | item
            hit = torch.searchsorted(node_key, key).clamp(max=len(node_key) - 1)
            in_prefix = node_key[hit] == key
            star = torch.zeros(len(nb), dtype=torch.long, device=dev).scatter_reduce_(
                0, src, torch.where(in_prefix, pos, 0), "amax")
            value = value * _decay(-(pos - star[src]).abs(), self.lambda_inh)
        return nb_b, c.session[nb][src], item, value


def build_stan(cfg: STANConfig, data) -> STAN:
    return STAN(data.train, data.n_items, k=cfg.k, sample=cfg.sample, lambda_spw=cfg.lambda_spw,
                lambda_snh=cfg.lambda_snh, lambda_inh=cfg.lambda_inh)


def build_vstan(cfg: VSTANConfig, data) -> STAN:
    return STAN(data.train, data.n_items, k=cfg.k, sample=cfg.sample, lambda_spw=cfg.lambda_spw,
                lambda_snh=cfg.lambda_snh, lambda_inh=cfg.lambda_inh, lambda_ipw=cfg.lambda_ipw,
                lambda_idf=cfg.lambda_idf)
