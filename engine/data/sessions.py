"""The session table: sessions stored flat (CSR), the one in-memory and on-disk layout every stage uses.

In memory, `Sessions` holds per-session arrays (`session_id`, `visitor`, `start`, `end`) and per-event
arrays (`items`, `events`, `timestamps`) cut into sessions by `offsets` (int64[S+1]). On disk it is one
parquet table with one row per session and list columns: an arrow list column *is* CSR (values +
offsets), so reading and writing are zero-copy.

Items are raw ids (int64) before the item index stage and indices 1..V (int32, 0 = unknown) after it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.core.atomic import atomic_path
from engine.core.schema import EventType, values

EVENT_TYPES: tuple[str, ...] = values(EventType)  # int8 codes 0, 1, 2: view, addtocart, transaction
NO_VISITOR = -1


def csr_gather(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `idx` of a CSR layout: return (new_offsets int64[len(idx)+1], positions into values)."""
    idx = np.asarray(idx, dtype=np.int64)
    lengths = offsets[idx + 1] - offsets[idx]
    new_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    # position of each kept element: start of its row + rank inside the row
    starts = np.repeat(offsets[idx] - new_offsets[:-1], lengths)
    positions = starts + np.arange(new_offsets[-1], dtype=np.int64)
    return new_offsets, positions


def count_distinct(values: np.ndarray) -> int:
    """Number of distinct values of an integer array, in O(n).

    Ids of click logs span a range a few times their count at most (RetailRocket visitors,
    YooChoose items), so a presence bitmap over [min, max] beats sorting or hashing (np.unique
    took 5 s per call on 30M events); a sparser range (bitmap over 8 bytes per value) falls back
    to np.unique."""
    values = np.asarray(values)
    if values.size == 0:
        return 0
    lo, hi = int(values.min()), int(values.max())
    if hi - lo >= max(1 << 20, 8 * values.size):
        return int(len(np.unique(values)))
    seen = np.zeros(hi - lo + 1, dtype=bool)
    seen[values - lo if lo else values] = True
    return int(np.count_nonzero(seen))


def row_ids(offsets: np.ndarray) -> np.ndarray:
    """For every element of a CSR layout, the index of its row (int64[E])."""
    n_rows = len(offsets) - 1
    return np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(offsets))


@dataclass
class Sessions:
    session_id: np.ndarray   # int64[S]
    visitor: np.ndarray      # int64[S], NO_VISITOR when the format has none
    start: np.ndarray        # int64[S], ms, first event
    end: np.ndarray          # int64[S], ms, last event
    offsets: np.ndarray      # int64[S+1]
    items: np.ndarray        # int64[E] raw ids, or int32[E] indices (0 = unknown)
    events: np.ndarray       # int8[E] codes into EVENT_TYPES
    timestamps: np.ndarray   # int64[E], ms

    def __len__(self) -> int:
        return len(self.session_id)

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, idx: np.ndarray) -> "Sessions":
        """Sessions at `idx` (int indices or a boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        new_offsets, pos = csr_gather(self.offsets, idx)
        return Sessions(self.session_id[idx], self.visitor[idx], self.start[idx], self.end[idx],
                        new_offsets, self.items[pos], self.events[pos], self.timestamps[pos])

    def with_items(self, items: np.ndarray) -> "Sessions":
        return replace(self, items=items)

    @classmethod
    def from_lists(cls, lists: list[list[int]], item_dtype=np.int32) -> "Sessions":
        """Sessions from Python lists of items (small inputs: tests, typed sessions); session i gets
        id, visitor, start and end i, events are views, timestamps count the events."""
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate([np.asarray(x, dtype=item_dtype) for x in lists]) if lists else \
            np.zeros(0, item_dtype)
        n = len(lists)
        ids = np.arange(n, dtype=np.int64)
        return cls(ids, ids.copy(), ids.copy(), ids.copy(), offsets, items.astype(item_dtype),
                   np.zeros(len(items), np.int8), np.arange(len(items), dtype=np.int64))

    @classmethod
    def empty(cls, item_dtype=np.int64) -> "Sessions":
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=item_dtype),
                   np.zeros(0, dtype=np.int8), z)

    # ---- arrow / parquet ----------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        offs = pa.array(self.offsets.astype(np.int32 if self.n_events < 2**31 else np.int64))
        lt = pa.ListArray if offs.type == pa.int32() else pa.LargeListArray
        return pa.table({
            "session_id": pa.array(self.session_id, pa.int64()),
            "visitor": pa.array(self.visitor, pa.int64()),
            "start": pa.array(self.start, pa.int64()),
            "end": pa.array(self.end, pa.int64()),
            "items": lt.from_arrays(offs, pa.array(self.items)),
            "events": lt.from_arrays(offs, pa.array(self.events, pa.int8())),
            "timestamps": lt.from_arrays(offs, pa.array(self.timestamps, pa.int64())),
        })

    @classmethod
    def from_arrow(cls, table: pa.Table) -> "Sessions":
        table = table.combine_chunks()

        def col(name: str) -> np.ndarray:
            return table.column(name).chunk(0).to_numpy() if table.num_rows else np.zeros(0, np.int64)

        def lst(name: str) -> tuple[np.ndarray, np.ndarray]:
            if table.num_rows == 0:
                return np.zeros(1, np.int64), np.zeros(0, np.int64)
            arr = table.column(name).chunk(0)
            offs = arr.offsets.to_numpy().astype(np.int64)
            # list arrays may be sliced: values are offset-relative to the first offset
            vals = arr.values.to_numpy()[offs[0]:offs[-1]]
            return offs - offs[0], vals

        offsets, items = lst("items")
        _, events = lst("events")
        _, ts = lst("timestamps")
        if table.num_rows == 0:
            return cls.empty()
        return cls(col("session_id").astype(np.int64), col("visitor").astype(np.int64),
                   col("start").astype(np.int64), col("end").astype(np.int64), offsets,
                   items, events.astype(np.int8), ts.astype(np.int64))

    def write(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            pq.write_table(self.to_arrow(), tmp, compression="zstd")

    @classmethod
    def read(cls, path: str | Path) -> "Sessions":
        return cls.from_arrow(pq.read_table(path))


def repeat_mask(s: Sessions) -> np.ndarray:
    """bool[S]: the session's last item already occurs earlier in the same session."""
    lengths = s.lengths
    if len(s) == 0:
        return np.zeros(0, dtype=bool)
    last = s.items[np.maximum(s.offsets[1:] - 1, 0)]
    pos_last = np.repeat(last, lengths)
    is_last_pos = np.zeros(s.n_events, dtype=bool)
    is_last_pos[s.offsets[1:][lengths > 0] - 1] = True
    hit = (s.items == pos_last) & ~is_last_pos
    return np.bincount(row_ids(s.offsets), weights=hit, minlength=len(s)) > 0


def session_stats(s: Sessions) -> dict:
    """The numbers users of session datasets compare: counts, length distribution, event shares,
    repeat rate (share of sessions of length >= 2 whose last item occurs earlier in the session)."""
    lengths = s.lengths
    out: dict = {
        "sessions": int(len(s)),
        "events": int(s.n_events),
        "items": count_distinct(s.items),
        "visitors": count_distinct(s.visitor[s.visitor != NO_VISITOR]),
    }
    if len(s):
        out.update({
            "length_mean": round(float(lengths.mean()), 3),
            "length_median": float(np.median(lengths)),
            "length_max": int(lengths.max()),
            "start": int(s.start.min()),
            "end": int(s.end.max()),
        })
        multi = lengths >= 2
        out["repeat_rate"] = round(float(repeat_mask(s)[multi].mean()), 4) if multi.any() else 0.0
        counts = np.bincount(s.events, minlength=len(EVENT_TYPES))
        out["event_shares"] = {name: round(float(c) / max(1, s.n_events), 4)
                               for name, c in zip(EVENT_TYPES, counts)}
    return out


def field_names() -> list[str]:
    return [f.name for f in fields(Sessions)]
