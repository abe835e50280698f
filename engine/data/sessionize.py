"""Sessionize: cut each visitor's click stream into sessions at inactivity gaps.

Rules (all in DataConfig): a gap of *more than* `session_gap_minutes` starts a new session (a gap of
exactly 30:00 stays in the session, 30:00.001 starts a new one); sessions with fewer than
`min_session_length` events are dropped; longer than `max_session_length` keep their last events.
Formats whose rows carry a session id (RSC15, Diginetica) keep those sessions; their events are only
ordered by time (stable, so equal timestamps keep file order). With `min_item_support` > 1 the
SR-GNN preprocessing order applies: items seen fewer times in sessions of length >= 2 are removed,
then short sessions are dropped.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.core.config import DataConfig
from engine.core.errors import StageError
from engine.core.progress import ProgressFn, StageReporter
from engine.data.sessions import NO_VISITOR, Sessions, count_distinct, csr_gather, row_ids, session_stats


def sessionize(events: pa.Table, cfg: DataConfig, progress: ProgressFn | None = None,
               item_support_from: pa.Table | None = None) -> tuple[Sessions, dict]:
    """Turn a canonical events table (see engine.data.formats) into sessions sorted by start time.

    `item_support_from` optionally gives the table whose item counts decide `min_item_support`
    (the train and test files together when a test file is given); default: `events` itself.
    """
    rep = StageReporter("sessionize", progress, total=4, unit="steps")
    has_ids = "session_key" in events.column_names
    key_name = "session_key" if has_ids else "visitor"
    key = events.column(key_name).to_numpy()
    items = events.column("item").to_numpy()
    ts = events.column("timestamp").to_numpy()
    ev = events.column("event").to_numpy().astype(np.int8, copy=False)
    n_in = len(items)
    stats: dict = {"input_events": int(n_in), f"input_{key_name}s": count_distinct(key)}

    # stable sort by (key, time): lexsort is stable, so equal timestamps keep file order. Only the
    # key and the time are gathered in sorted order; items and events are gathered once, at the
    # end, for the events that are kept (at 30M events each gather of a column costs ~1 s and
    # its size in memory)
    order = np.lexsort((ts, key))
    key_s, ts_s = key[order], ts[order]
    rep.step("sorted events")

    n = len(key_s)
    new_session = np.ones(n, dtype=bool)
    if n > 1:
        same_key = key_s[1:] == key_s[:-1]
        if has_ids:
            new_session[1:] = ~same_key
        else:
            gap_ms = cfg.session_gap_minutes * 60_000.0
            new_session[1:] = ~(same_key & ((ts_s[1:] - ts_s[:-1]) <= gap_ms))
        del same_key
    sid = np.cumsum(new_session) - 1                     # session of each event
    del new_session
    stats["sessions_before_filter"] = int(sid[-1] + 1) if n else 0

    if cfg.min_item_support > 1:
        # SR-GNN's order: support is counted over sessions of length >= 2 (of both files when a test
        # file is given), rare items are removed, then short sessions are dropped. Sessions stay as
        # cut before the removal.
        items_s = items[order]
        counted = np.bincount(sid)[sid] >= 2
        pool = items_s[counted]
        if item_support_from is not None:
            pool = np.concatenate([pool, item_support_from.column("item").to_numpy()])
        uniq, counts = np.unique(pool, return_counts=True)
        pos = np.minimum(np.searchsorted(uniq, items_s), len(uniq) - 1)
        keep = (uniq[pos] == items_s) & (counts[pos] >= cfg.min_item_support)
        stats["dropped_rare_item_events"] = int(n - keep.sum())
        order, key_s, ts_s, sid = order[keep], key_s[keep], ts_s[keep], sid[keep]
        del items_s, counted, pool, pos, keep
        n = len(key_s)
    rep.step("filtered rare items")

    first = np.ones(n, dtype=bool)
    first[1:] = sid[1:] != sid[:-1]
    starts_at = np.flatnonzero(first)
    offsets = np.append(starts_at, n).astype(np.int64)
    lengths = np.diff(offsets)
    del first, starts_at

    keep_s = lengths >= cfg.min_session_length
    stats["dropped_short_sessions"] = int((~keep_s).sum())
    stats["truncated_sessions"] = int((lengths[keep_s] > cfg.max_session_length).sum())
    if not keep_s.any():
        raise StageError(f"sessionize: no session has at least {cfg.min_session_length} events "
                         f"({len(lengths)} sessions before the filter); lower min_session_length")
    rep.step("cut sessions")

    # keep the last max_session_length events of each kept session: one boolean mask over events
    sid = row_ids(offsets)
    from_end = offsets[1:][sid] - np.arange(n)          # 1 for the last event of its session
    ev_keep = keep_s[sid] & (from_end <= cfg.max_session_length)
    del from_end
    new_lengths = np.bincount(sid[ev_keep], minlength=len(lengths))[keep_s]
    del sid
    new_offsets = np.zeros(len(new_lengths) + 1, dtype=np.int64)
    np.cumsum(new_lengths, out=new_offsets[1:])
    s_key = key_s[offsets[:-1][keep_s]]
    src = order[ev_keep]            # log row of each kept event, by (session, time)
    k_ts = ts_s[ev_keep]
    del order, key_s, ts_s, ev_keep
    start = k_ts[new_offsets[:-1]]
    end = k_ts[new_offsets[1:] - 1]
    del k_ts
    if has_ids:
        session_id, visitor = s_key.astype(np.int64), np.full(len(s_key), NO_VISITOR, np.int64)
    else:
        session_id, visitor = np.flatnonzero(keep_s).astype(np.int64), s_key.astype(np.int64)
    # sessions ordered by start time (ties by id): the split stage and every reader rely on it
    s_order = np.lexsort((session_id, start))
    out_offsets, pos = csr_gather(new_offsets, s_order)
    src = src[pos]
    del pos
    out = Sessions(session_id[s_order], visitor[s_order], start[s_order], end[s_order], out_offsets,
                   items[src].astype(np.int64, copy=False), ev[src],
                   ts[src].astype(np.int64, copy=False))
    rep.step("done")
    stats.update(session_stats(out))
    return out, stats
