"""The embedded demo dataset: seeded RetailRocket-format click logs with planted structure.

`generate_demo` writes the log (header `timestamp,visitorid,event,itemid,transactionid`, times in
ms, like RetailRocket's events.csv) and the truth file (`DemoTruth`, the generator's parameters), so
`DemoOracle` can score any session prefix with the exact next-item distribution the log was drawn
from. It takes both paths from the caller: in a workspace they are `DatasetDir.demo_events` and
`DatasetDir.demo_truth`.

The process. A catalogue of items with Zipf-like popularity `pop` is cut into clusters (categories);
each item `a` has a few successors `succ(a)` in its cluster with skewed probabilities. A visitor has
one or more sessions; a session's length is drawn up front (independent of its content, so the
next-item law below is exact for any prefix of an observed session). The first event is a view of an
item drawn from `pop` (sessions of 1-2 events, "bounces" the pipeline drops, land on a flatter law
`pop^entry_beta`: the long tail of items seen once). Given the prefix so far with last item `a` and
last event `e`:

    phi = f_cart if e == view, f_buy if e == addtocart, 0 if e == transaction
    with prob phi:      addtocart (after a view) / transaction (after an addtocart) of `a`
    with prob 1 - phi:  the next event is a view of x ~ M(x), where
    M(x) = p_same [x = a] + p_repeat n_x / t + p_trans succ(a, x)
           + p_cluster pop(x) [cl(x) = cl(a)] / pop(cl(a)) + p_global pop(x)

(`n_x / t`: share of `x` among the `t` events of the prefix). So P(next item = x) =
phi [x = a] + (1 - phi) M(x). Events of one session are 1 s .. 25 min apart; sessions of one visitor
are at least 31 min apart (often hours or days), so 30-minute sessionizing recovers them exactly.
Sessions have at most 50 events (the pipeline's cap), so the oracle never sees a truncated prefix.

Sizes were tuned with a throwaway 30-min sessionizer (drop < 3 events; train = first 70% of sessions
by start; graph = distinct item pairs within 5 positions, self-pairs excluded). Seed 0 measures:
  full:  2,754,887 events, 1,407,580 visitors, 236,891 items; 169,715 sessions (median 4, mean 6.3);
         train graph 82,951 nodes, 687,194 edges; generation ~5 s
  wide:  3,918,108 events, 2,000,000 visitors, 319,602 items; 241,699 sessions; ~240K items in train
         sessions (full: 83K)
  small: 178,826 events, 30,000 visitors, 3,998 items; 23,808 sessions (median 4); graph 3,964 / 85K
  tiny:  4,527 events, 300 visitors, 199 items; 431 sessions (median 6) over 6 weeks; ~20 ms
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from engine.core.atomic import atomic_path
from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.data.demo.truth import MIX_NAMES, DemoTruth
from engine.data.sessions import EVENT_TYPES, csr_gather, row_ids

CSV_HEADER = "timestamp,visitorid,event,itemid,transactionid"
# the item metadata, beside the log, in RetailRocket's own files' names and layout
ITEM_PROPERTIES, CATEGORY_TREE = "item_properties.csv", "category_tree.csv"
PROPERTIES_HEADER, TREE_HEADER = "timestamp,itemid,property,value", "categoryid,parentid"
MINUTE_MS = 60_000
DAY_MS = 86_400_000
# RetailRocket's log starts 2015-05-03 03:00 UTC and runs 138 days (to 2015-09-18)
RR_START_MS = int(datetime(2015, 5, 3, 3, tzinfo=timezone.utc).timestamp() * 1000)


@dataclass(frozen=True)
class DemoSize:
    """Scale and shape of one demo size. The mixture weights are shared by all sizes; catalogue
    shape, session lengths and funnel rates are tuned per size (RetailRocket-like event shares)."""

    n_items: int                 # catalogue size (the rarest items may never occur)
    n_clusters: int
    n_visitors: int
    days: float                  # timeline length, from RR_START_MS
    multi_visitor_share: float   # share of visitors with more than one session
    extra_sessions_mean: float   # those have 1 + Geometric(mean) sessions
    p_len1: float                # session length distribution: P(L=1), P(L=2), and for
    p_len2: float                # L = 3..max_len a power law L^-len_exponent
    len_exponent: float
    max_len: int = 50            # = the pipeline's max_session_length, so nothing is truncated
    zipf_alpha: float = 1.0      # pop(rank r) ∝ (r + zipf_offset)^-alpha
    zipf_offset: float = 10.0
    entry_beta: float = 1.0      # first item of 1-2 event sessions (bounces) ∝ pop^entry_beta
    cluster_alpha: float = 0.8   # cluster sizes ∝ rank^-cluster_alpha (at least 2 items each)
    succ_mean: float = 6.0       # successors per item: 1 + Poisson(succ_mean - 1), at most 8
    succ_pop_beta: float = 0.9   # successors drawn from the own cluster ∝ pop^beta
    succ_ratio: float = 0.7      # successor probabilities ∝ ratio^j (j = 0, 1, ...): skewed
    # next-item mixture (see the module docstring): transitions dominate
    p_same: float = 0.12
    p_repeat: float = 0.10
    p_trans: float = 0.46
    p_cluster: float = 0.22
    p_global: float = 0.10
    f_cart: float = 0.065        # P(addtocart of the item | the last event was its view)
    f_buy: float = 0.50          # P(transaction | the last event was an addtocart)
    gap_median_s: float = 60.0   # intra-session gaps: lognormal, clipped to [1 s, 25 min]
    gap_sigma: float = 1.1
    max_gap_days: float = 30.0   # inter-session gaps: log-uniform in [31 min, max_gap_days]

    def __post_init__(self) -> None:
        mix = sum(getattr(self, n) for n in MIX_NAMES)
        if abs(mix - 1.0) > 1e-9:
            raise InputError(f"demo size: mixture weights {MIX_NAMES} sum to {mix}, expected 1")
        if self.p_len1 + self.p_len2 >= 1:
            raise InputError("demo size: p_len1 + p_len2 must be < 1")


DEMO_SIZES: dict[str, DemoSize] = {
    # tests: ~430 sessions of length >= 3 over ~200 items, 6 weeks; generates in ~20 ms
    "tiny": DemoSize(n_items=200, n_clusters=12, n_visitors=300, days=42,
                     multi_visitor_share=0.4, extra_sessions_mean=1.5,
                     p_len1=0.05, p_len2=0.05, len_exponent=1.6, zipf_alpha=0.8, f_cart=0.027,
                     f_buy=0.4),
    # the default demo: ~22K sessions of length >= 3 over ~4K items, RetailRocket's 138 days
    "small": DemoSize(n_items=4000, n_clusters=80, n_visitors=30_000, days=138,
                      multi_visitor_share=0.25, extra_sessions_mean=2.0,
                      p_len1=0.35, p_len2=0.12, len_exponent=2.4, zipf_alpha=0.9, f_cart=0.035,
                      f_buy=0.4),
    # RetailRocket scale (tuned with a 30-min sessionizer, see the module docstring): ~2.76M
    # events, 1.41M visitors, ~237K distinct items, ~170K sessions of >= 3 events (median 4)
    "full": DemoSize(n_items=250_000, n_clusters=1200, n_visitors=1_407_580, days=138,
                     multi_visitor_share=0.10, extra_sessions_mean=1.6,
                     p_len1=0.7615, p_len2=0.1344, len_exponent=2.4, zipf_alpha=1.3,
                     zipf_offset=300.0, entry_beta=0.6),
    # full's shape with a RetailRocket-sized *trained* catalogue: full's 237K items shrink to 83K in
    # training sessions (as RetailRocket's do), here ~240K items occur there (a flatter popularity
    # law over 320K items, 2M visitors); the serving benchmark's catalogue (sessrec bench serve)
    "wide": DemoSize(n_items=320_000, n_clusters=1200, n_visitors=2_000_000, days=138,
                     multi_visitor_share=0.10, extra_sessions_mean=1.6,
                     p_len1=0.7615, p_len2=0.1344, len_exponent=2.4, zipf_alpha=0.7,
                     zipf_offset=5000.0, entry_beta=0.6),
    # YooChoose-full shape (RSC15 clicks: ~33M clicks, ~9.2M sessions, ~53K items, mean length
    # ~3.6, most sessions 1-2 clicks, 6 months): ~30M events, ~8.2M sessions of which ~45% have
    # >= 3 events; few returning visitors (YooChoose has none)
    "xl": DemoSize(n_items=56_000, n_clusters=400, n_visitors=7_650_000, days=183,
                   multi_visitor_share=0.05, extra_sessions_mean=1.5,
                   p_len1=0.30, p_len2=0.25, len_exponent=2.4, zipf_alpha=1.0,
                   zipf_offset=50.0, entry_beta=0.8),
}


# ---- sampling helpers --------------------------------------------------------------------------
class _SegmentSampler:
    """Draw one value from segment `s` of a CSR layout with per-value weights, for many `s` at once.

    Cumulative weights are normalised per segment and shifted by the segment index, so one global
    `searchsorted` serves every segment: segment s occupies (s, s + 1].
    """

    def __init__(self, offsets: np.ndarray, values: np.ndarray, weights: np.ndarray) -> None:
        self.offsets, self.values = offsets, values
        seg = row_ids(offsets)
        cum = np.cumsum(weights, dtype=np.float64)
        before = np.concatenate([[0.0], cum])[offsets[:-1]]
        total = cum[offsets[1:] - 1] - before
        frac = (cum - np.repeat(before, np.diff(offsets))) / np.repeat(total, np.diff(offsets))
        frac[offsets[1:] - 1] = 1.0  # exact segment ends: rounding must not leak into the next one
        self.keys = seg + frac

    def sample(self, seg: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, seg + u, side="right")
        return self.values[np.clip(pos, self.offsets[seg], self.offsets[seg + 1] - 1)]


def _catalogue(cfg: DemoSize, rng: np.random.Generator) -> DemoTruth:
    n, c = cfg.n_items, cfg.n_clusters
    # raw ids: sparse and unrelated to popularity, as in real logs (catches "ids are 0..N-1" bugs)
    raw_ids = np.sort(rng.permutation(2 * n)[:n] + 1).astype(np.int64)
    w = (rng.permutation(n) + cfg.zipf_offset) ** -cfg.zipf_alpha
    pop = w / w.sum()
    w_c = np.arange(1, c + 1) ** -cfg.cluster_alpha
    sizes = 2 + rng.multinomial(n - 2 * c, w_c / w_c.sum())
    cluster = np.empty(n, dtype=np.int64)
    cluster[rng.permutation(n)] = np.repeat(np.arange(c), sizes)
    cl_members = np.lexsort((-pop, cluster)).astype(np.int64)
    cl_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    # successors: 2*8 draws from the own cluster (∝ pop^beta), minus self and duplicates, keep k
    m = 16
    draw = _SegmentSampler(cl_offsets, cl_members, pop[cl_members] ** cfg.succ_pop_beta)
    d = draw.sample(np.repeat(cluster, m), rng.random(n * m)).reshape(n, m)
    d[d == np.arange(n)[:, None]] = n  # self -> sentinel, sorts last
    d.sort(axis=1)
    valid = (d < n) & np.concatenate([np.ones((n, 1), bool), d[:, 1:] != d[:, :-1]], axis=1)
    k = np.minimum(1 + rng.poisson(cfg.succ_mean - 1, n), 8)
    valid &= np.cumsum(valid, axis=1) <= k[:, None]
    # an item whose draws were all itself gets the next member of its cluster (clusters have >= 2)
    none = ~valid.any(axis=1)
    rank = np.empty(n, dtype=np.int64)
    rank[cl_members] = np.arange(n) - np.repeat(cl_offsets[:-1], sizes)
    nxt = cl_members[cl_offsets[cluster] + (rank + 1) % sizes[cluster]]
    d[none, 0], valid[none, 0] = nxt[none], True
    counts = valid.sum(axis=1)
    succ_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    succ_items = d[valid].astype(np.int64)
    # draws are sorted by index, which is random w.r.t. popularity: position j gets weight ratio^j
    j = np.arange(len(succ_items)) - np.repeat(succ_offsets[:-1], counts)
    sw = cfg.succ_ratio ** j
    succ_probs = sw / np.repeat(np.add.reduceat(sw, succ_offsets[:-1]), counts)
    params = np.array([*(getattr(cfg, n) for n in MIX_NAMES), cfg.f_cart, cfg.f_buy])
    return DemoTruth(raw_ids, pop, cluster, cl_offsets, cl_members, succ_offsets, succ_items,
                  succ_probs, params)


def _sequences(cfg: DemoSize, truth: DemoTruth, lengths: np.ndarray, rng: np.random.Generator,
               rep: StageReporter, blocked: np.ndarray | None = None,
               early: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Items and events of sessions with `lengths` (sorted descending), flat in CSR order.

    One vectorised step per position: at step t the active sessions are a prefix of the array.
    `blocked` (bool per item) and `early` (bool per session): items not yet released never occur in
    the early sessions; such a draw is drawn again (rejection: the law conditioned on the released
    items, exact). Without them no extra random number is drawn.
    """
    n = len(truth.pop)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.empty(offsets[-1], dtype=np.int64)
    events = np.zeros(offsets[-1], dtype=np.int8)
    glob_cum = np.cumsum(truth.pop)
    glob_cum[-1] = 1.0

    def global_draw(u: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(glob_cum, u, side="right"), n - 1)

    cl_draw = _SegmentSampler(truth.cl_offsets, truth.cl_members, truth.pop[truth.cl_members])
    succ_draw = _SegmentSampler(truth.succ_offsets, truth.succ_items, truth.succ_probs)
    mix_cum = np.cumsum(truth.mixture)
    phi_of = truth.funnel
    # first items: long sessions start at popular items; bounces (1-2 events, dropped by the
    # pipeline) land on a flatter law, which gives the long tail of items seen once or twice
    entry_cum = np.cumsum(truth.pop ** cfg.entry_beta)
    entry_cum /= entry_cum[-1]
    def first_draw(u: np.ndarray, long: np.ndarray) -> np.ndarray:
        bounce = np.minimum(np.searchsorted(entry_cum, u, side="right"), n - 1)
        return np.where(long, global_draw(u), bounce)

    first = first_draw(rng.random(len(lengths)), lengths >= 3)
    if blocked is not None:
        while (redo := np.flatnonzero(early & blocked[first])).size:
            first[redo] = first_draw(rng.random(len(redo)), lengths[redo] >= 3)
    items[offsets[:-1]] = first
    max_len = int(lengths[0]) if len(lengths) else 0
    def step(base: np.ndarray, t: int, n_t: int) -> tuple[np.ndarray, np.ndarray]:
        a, e = items[base + t - 1], events[base + t - 1]
        u_funnel, u_comp, u_pick = rng.random(n_t), rng.random(n_t), rng.random(n_t)
        funnel = u_funnel < phi_of[e]
        comp = np.minimum(np.searchsorted(mix_cum, u_comp, side="right"), 4)
        comp[funnel] = -1
        new = a.copy()  # funnel and p_same keep the last item
        m = comp == 1
        new[m] = items[base[m] + (u_pick[m] * t).astype(np.int64)]
        m = comp == 2
        new[m] = succ_draw.sample(a[m], u_pick[m])
        m = comp == 3
        new[m] = cl_draw.sample(truth.cluster[a[m]], u_pick[m])
        m = comp == 4
        new[m] = global_draw(u_pick[m])
        return new, np.where(funnel, e + 1, 0)

    for t in range(1, max_len):
        n_t = int(np.searchsorted(-lengths, -t, side="left"))  # sessions with length > t
        base = offsets[:n_t]
        new, ev = step(base, t, n_t)
        if blocked is not None:            # the whole step again (funnel included) for a blocked draw
            while (redo := np.flatnonzero(early[:n_t] & blocked[new])).size:
                new[redo], ev[redo] = step(base[redo], t, len(redo))
        items[base + t] = new
        events[base + t] = ev
        rep(t, max_len, f"position {t}")
    return items, events


def _timestamps(cfg: DemoSize, visitor: np.ndarray, lengths: np.ndarray, n_visitors: int,
                rng: np.random.Generator) -> np.ndarray:
    """Event times (ms) for sessions given in visitor order (grouped, time order within visitor)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_ev = int(offsets[-1])
    gaps = np.exp(np.log(cfg.gap_median_s * 1000) + cfg.gap_sigma * rng.standard_normal(n_ev))
    gaps = np.clip(gaps, 1000, 25 * MINUTE_MS).astype(np.int64)
    gaps[offsets[:-1]] = 0  # first event of each session
    cs = np.cumsum(gaps)
    within = cs - np.repeat(cs[offsets[:-1]], lengths)
    duration = within[offsets[1:] - 1]

    first = np.ones(len(lengths), dtype=bool)
    first[1:] = visitor[1:] != visitor[:-1]
    lo, hi = np.log(31 * MINUTE_MS), np.log(cfg.max_gap_days * DAY_MS)
    g = np.exp(lo + (hi - lo) * rng.random(len(lengths))).astype(np.int64) - 31 * MINUTE_MS
    g[first] = 0
    # fit each visitor's span in the timeline: shrink the part of its gaps above 31 min if needed
    span_ms = int(cfg.days * DAY_MS)
    n_gaps = np.bincount(visitor, weights=(~first).astype(float), minlength=n_visitors)
    fixed = np.bincount(visitor, weights=duration, minlength=n_visitors) + n_gaps * 31 * MINUTE_MS
    flex = np.bincount(visitor, weights=g, minlength=n_visitors)
    room = 0.98 * span_ms - fixed
    if (room < 0).any():
        raise InputError("demo size: sessions of one visitor do not fit in the timeline")
    scale = np.minimum(1.0, room / np.maximum(flex, 1.0))
    g = (g * scale[visitor]).astype(np.int64) + np.where(first, 0, 31 * MINUTE_MS)
    delta = g + np.concatenate([[0], duration[:-1]])
    delta[first] = 0
    cd = np.cumsum(delta)
    first_idx = np.flatnonzero(first)
    last_idx = np.append(first_idx[1:], len(lengths)) - 1
    per_visitor = last_idx - first_idx + 1
    rel_start = cd - np.repeat(cd[first_idx], per_visitor)
    vspan = rel_start[last_idx] + duration[last_idx]
    v_start = RR_START_MS + (rng.random(len(first_idx)) * (span_ms - vspan)).astype(np.int64)
    start = np.repeat(v_start, per_visitor) + rel_start
    return np.repeat(start, lengths) + within


# ---- public API ---------------------------------------------------------------------------------
def generate_demo(events_path: Path, truth_path: Path, size: str = "small", seed: int = 0,
                  progress: ProgressFn | None = None, new_items: float = 0.0,
                  chunk_paths: tuple[Path, ...] = ()) -> dict:
    """Write the log of demo `size` to `events_path` (CSV), its truth to `truth_path` (npz) and its
    item metadata beside the log, in RetailRocket's format (`ITEM_PROPERTIES`, `CATEGORY_TREE`);
    return stats.

    `new_items` (a share of the catalogue, 0 .. 0.5): items released at the start of the test period
    (the 85% quantile of the start times of sessions of >= 3 events, where the pipeline's default
    split puts its last cut): no session that starts earlier holds them, later sessions draw them
    like any other item. Their categories are in the metadata: a model that reads it can recommend
    them although training never saw them. 0 (the default) draws no extra random number: the log
    is the same as without the option.

    With `chunk_paths` the timeline is cut into 1 + len(chunk_paths) equal spans and each session
    goes, whole, to the span it starts in: the first to `events_path`, the later ones to
    `chunk_paths` (newer data to `sessrec data append`). The item files describe the whole
    catalogue (every chunk's items)."""
    if size not in DEMO_SIZES:
        raise InputError(f"demo: unknown size {size!r}; valid sizes: {', '.join(DEMO_SIZES)}")
    if not 0.0 <= new_items <= 0.5:
        raise InputError(f"demo: new_items must be a share from 0 to 0.5 of the catalogue, got {new_items}")
    t0 = time.perf_counter()
    cfg = DEMO_SIZES[size]
    events_path, truth_path = Path(events_path), Path(truth_path)
    if events_path.resolve() == truth_path.resolve():
        raise InputError(f"demo: the log and the truth file need two paths, got {events_path} twice")
    rep = StageReporter("demo", progress, total=cfg.max_len, unit="steps")
    # independent streams, so changing one part of the process leaves the others' draws alone (the
    # first four of a spawn of six are those of a spawn of four: the logs of earlier versions)
    r_cat, r_ses, r_seq, r_time, r_meta, r_new = (np.random.default_rng(s)
                                                  for s in np.random.SeedSequence([seed, 0xDE30]).spawn(6))
    truth = _catalogue(cfg, r_cat)

    # visitors and their sessions (grouped by visitor, in time order within a visitor)
    v = cfg.n_visitors
    n_sess = np.ones(v, dtype=np.int64)
    multi = r_ses.random(v) < cfg.multi_visitor_share
    n_sess[multi] += np.minimum(r_ses.geometric(1 / cfg.extra_sessions_mean, multi.sum()), 30)
    visitor = np.repeat(np.arange(v), n_sess)
    lens = np.arange(3, cfg.max_len + 1)
    tail = lens.astype(float) ** -cfg.len_exponent
    p_tail = (1 - cfg.p_len1 - cfg.p_len2) * tail / tail.sum()
    pmf = np.concatenate([[cfg.p_len1, cfg.p_len2], p_tail])
    lengths = r_ses.choice(np.arange(1, cfg.max_len + 1), size=len(visitor), p=pmf).astype(np.int64)

    # times first (they do not depend on the content): the sessions before a release are known
    ts = _timestamps(cfg, visitor, lengths, v, r_time)
    starts = ts[np.concatenate([[0], np.cumsum(lengths)[:-1]])]
    blocked, release_ms = None, None
    if new_items > 0:
        blocked = np.zeros(cfg.n_items, dtype=bool)
        blocked[r_new.permutation(cfg.n_items)[:int(round(new_items * cfg.n_items))]] = True
        release_ms = int(np.quantile(starts[lengths >= 3], 0.85))
    # content: generated longest-first (active sessions form a prefix), then put back
    order = np.argsort(-lengths, kind="stable")
    early = (starts < release_ms)[order] if blocked is not None else None
    items_g, events_g = _sequences(cfg, truth, lengths[order], r_seq, rep, blocked, early)
    g_off = np.concatenate([[0], np.cumsum(lengths[order])])
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    _, pos = csr_gather(g_off, inv)
    items, events = items_g[pos], events_g[pos]

    # one basket id per session with a purchase, numbered by the session's start time
    sess_of = np.repeat(np.arange(len(lengths)), lengths)
    is_tx = events == 2
    tx_sess = np.unique(sess_of[is_tx])
    tx_rank = np.full(len(lengths), -1, dtype=np.int64)
    tx_rank[tx_sess[np.argsort(starts[tx_sess], kind="stable")]] = np.arange(len(tx_sess))
    txid = tx_rank[sess_of]

    visitor_ids = r_ses.permutation(v).astype(np.int64)  # raw visitor ids unrelated to time
    log_order = np.argsort(ts, kind="stable")  # the log is in time order, like a server log
    table = pa.table({
        "timestamp": pa.array(ts[log_order]),
        "visitorid": pa.array(visitor_ids[visitor[sess_of]][log_order]),
        "event": pa.DictionaryArray.from_arrays(pa.array(events[log_order].astype(np.int32)),
                                                pa.array(EVENT_TYPES)),
        "itemid": pa.array(truth.raw_ids[items][log_order]),
        "transactionid": pa.array(txid[log_order], mask=~is_tx[log_order]),
    })
    new_raw = truth.raw_ids[blocked] if blocked is not None else np.zeros(0, np.int64)
    meta = {"size": size, "seed": seed, "config": asdict(cfg)}
    if blocked is not None:
        meta.update({"new_items": new_items, "release_ms": release_ms, "new_raw_ids": new_raw.tolist()})
    props, tree = _item_files(cfg, truth, r_meta, int(ts.min()), int(ts.max()), blocked, release_ms)
    props_path, tree_path = (events_path.with_name(n) for n in (ITEM_PROPERTIES, CATEGORY_TREE))
    n_chunks = 1 + len(chunk_paths)
    lo, hi = int(ts.min()), int(ts.max()) + 1
    chunk_of = np.minimum((starts[sess_of][log_order] - lo) * n_chunks // (hi - lo), n_chunks - 1)
    paths = [Path(events_path), *map(Path, chunk_paths)]
    # every file is complete before any is renamed into place
    with contextlib.ExitStack() as stack:
        tmp_npz = stack.enter_context(atomic_path(truth_path))
        for c, path in enumerate(paths):
            tmp_csv = stack.enter_context(atomic_path(path))
            part = table.filter(pa.array(chunk_of == c)) if n_chunks > 1 else table
            with open(tmp_csv, "wb") as f:
                # header by hand: pyarrow quotes header names even with quoting_style="none"
                f.write((CSV_HEADER + "\n").encode())
                pacsv.write_csv(part, f, pacsv.WriteOptions(include_header=False,
                                                            quoting_style="none", batch_size=1 << 16))
        for path, header, t in ((props_path, PROPERTIES_HEADER, props), (tree_path, TREE_HEADER, tree)):
            tmp = stack.enter_context(atomic_path(path))
            with open(tmp, "wb") as f:
                f.write((header + "\n").encode())
                pacsv.write_csv(t, f, pacsv.WriteOptions(include_header=False, quoting_style="none",
                                                         batch_size=1 << 16))
        truth.save(tmp_npz, meta)

    counts = np.bincount(events, minlength=3)
    stats = {
        "size": size, "seed": seed,
        "events": int(len(items)),
        "visitors": int(v),
        "items": int(len(np.unique(items))),
        "catalogue_items": int(cfg.n_items),
        "sessions": int(len(lengths)),
        "sessions_min3": int((lengths >= 3).sum()),
        "event_shares": {name: round(float(c) / max(1, len(items)), 4)
                         for name, c in zip(EVENT_TYPES, counts)},
        "start": int(ts.min()), "end": int(ts.max()),
        "start_date": _iso(int(ts.min())), "end_date": _iso(int(ts.max())),
        "categories": int(tree.num_rows),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if blocked is not None:
        stats.update({"new_items": int(blocked.sum()), "release": _iso(release_ms),
                      "new_item_events": int(blocked[items].sum())})
    if n_chunks > 1:
        stats["chunk_events"] = np.bincount(chunk_of, minlength=n_chunks).tolist()
    rep(cfg.max_len, cfg.max_len, "written")
    return stats


def _item_files(cfg: DemoSize, truth: DemoTruth, rng: np.random.Generator, start_ms: int, end_ms: int,
                blocked: np.ndarray | None, release_ms: int | None) -> tuple[pa.Table, pa.Table]:
    """The catalogue's metadata as RetailRocket writes it: property rows (timestamp,itemid,property,
    value) and a category tree (categoryid,parentid).

    Each cluster is a leaf category; leaves hang under parents (about 8 leaves each), parents under
    roots (about 6 each), ids sparse and unrelated to the clusters' numbers. Per item: `categoryid`
    (its cluster), `price` (`n<number>` as RetailRocket writes numbers; log-normal around a price
    level of its leaf), `name`, and `available` twice: 1 at the start, and at mid-timeline 0 for
    about 8% of the items (the latest value is what counts). A new item's rows are dated at its
    release."""
    n, c = cfg.n_items, cfg.n_clusters
    n_parents = max(2, c // 8)
    n_roots = max(1, n_parents // 6)
    ids = (rng.permutation(4 * (c + n_parents + n_roots))[:c + n_parents + n_roots] + 1).astype(np.int64)
    leaf_id, parent_id, root_id = ids[:c], ids[c:c + n_parents], ids[c + n_parents:]
    leaf_parent = parent_id[rng.integers(0, n_parents, c)]
    parent_root = root_id[rng.integers(0, n_roots, n_parents)]
    tree = pa.table({"categoryid": np.concatenate([leaf_id, parent_id, root_id]),
                     "parentid": pa.array(np.concatenate([leaf_parent, parent_root, np.zeros(n_roots, np.int64)]),
                                          mask=np.concatenate([np.zeros(c + n_parents, bool), np.ones(n_roots, bool)]))})
    level = np.exp(rng.normal(3.0, 1.0, c))                      # a price level per leaf
    price = np.round(level[truth.cluster] * np.exp(rng.normal(0.0, 0.4, n)), 2)
    words = rng.integers(0, len(_ADJECTIVES), n)
    nouns = rng.integers(0, len(_NOUNS), c)[truth.cluster]
    name = np.char.add(np.char.add(np.array(_ADJECTIVES)[words], " "), np.array(_NOUNS)[nouns])
    born = np.full(n, start_ms, np.int64)
    if blocked is not None:
        born[blocked] = release_ms
    mid = max(born.max(), (start_ms + end_ms) // 2)
    gone = rng.random(n) < 0.08
    raw = truth.raw_ids
    parts = [(born, raw, "categoryid", leaf_id[truth.cluster].astype(str)),
             (born, raw, "price", np.char.add("n", np.char.mod("%.3f", price))),
             (born, raw, "name", name),
             (born, raw, "available", np.full(n, "1")),
             (np.full(int(gone.sum()), mid), raw[gone], "available", np.full(int(gone.sum()), "0"))]
    cols = [np.concatenate([p[i] if i != 2 else np.full(len(p[1]), p[2]) for p in parts]) for i in range(4)]
    order = np.lexsort((cols[1], cols[0]))                      # by time, then item: a snapshot log
    props = pa.table({"timestamp": cols[0][order], "itemid": cols[1][order],
                      "property": cols[2][order], "value": cols[3][order]})
    return props, tree


_ADJECTIVES = ("red", "blue", "light", "classic", "compact", "deluxe", "eco", "smart", "vintage", "soft",
               "steel", "wooden", "mini", "pro", "travel", "family")
_NOUNS = ("lamp", "kettle", "backpack", "jacket", "sneaker", "chair", "mug", "blender", "tent", "watch",
          "headphones", "scarf", "drill", "teapot", "notebook", "bicycle", "candle", "umbrella", "pillow",
          "skillet")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

