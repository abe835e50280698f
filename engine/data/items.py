"""Item index: the train vocabulary mapped to 1..V (0 is padding / unknown item).

Items are numbered by descending train frequency (ties by raw id), so index order is popularity
order. Validation and test events whose item never occurs in train map to 0; they are counted, and
the evaluator reports targets that are 0 as misses it could never have hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.core.atomic import atomic_path
from engine.data.sessions import Sessions

UNKNOWN = 0
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_LUT_MIN = 1 << 16   # encode() this many ids or more with a lookup table when the id range is compact


def parse_item_ids(text: str) -> list[int]:
    """'355908, 248676 1' -> [355908, 248676, 1]; a non-numeric token is a clear error."""
    from engine.core.errors import InputError
    out = []
    for t in text.replace(",", " ").split():
        if not t.lstrip("-").isdigit():
            raise InputError(f"item id {t!r} is not a number (type ids separated by spaces or commas)")
        v = int(t)
        if not INT64_MIN <= v <= INT64_MAX:      # ids are int64 everywhere (parquet, the index)
            raise InputError(f"item id {t} is out of range: item ids are 64-bit integers "
                             f"({INT64_MIN} .. {INT64_MAX})")
        out.append(v)
    return out


@dataclass
class ItemIndex:
    raw_ids: np.ndarray       # int64[V]: raw id of index i+1
    train_counts: np.ndarray  # int64[V]: occurrences in train sessions

    @property
    def n_items(self) -> int:
        return len(self.raw_ids)

    @classmethod
    def from_train(cls, train: Sessions) -> "ItemIndex":
        raw, counts = np.unique(train.items, return_counts=True)
        order = np.lexsort((raw, -counts))
        return cls(raw[order].astype(np.int64), counts[order].astype(np.int64))

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        # cached: recommend() encodes a handful of ids per key press and must not re-sort V ids
        cache = getattr(self, "_sorted_cache", None)
        if cache is None:
            order = np.argsort(self.raw_ids, kind="stable")
            cache = (order, self.raw_ids[order])
            object.__setattr__(self, "_sorted_cache", cache)
        return cache

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Raw ids -> int32 indices (0 for items not in the vocabulary). Vectorised binary search."""
        raw = np.asarray(raw, dtype=np.int64)
        if self.n_items == 0:
            return np.zeros(len(raw), dtype=np.int32)
        order, sorted_raw = self._sorted()
        lo, hi = int(sorted_raw[0]), int(sorted_raw[-1])
        if len(raw) >= _LUT_MIN and hi - lo < 4 * len(raw):
            # many ids over a compact range (a split of a large log): a dense lookup table is
            # O(n), where a binary search per id costs log V random reads each
            lut = np.zeros(hi - lo + 1, dtype=np.int32)
            lut[self.raw_ids - lo] = np.arange(1, self.n_items + 1, dtype=np.int32)
            inside = (raw >= lo) & (raw <= hi)
            out = np.zeros(len(raw), dtype=np.int32)
            out[inside] = lut[raw[inside] - lo]
            return out
        pos = np.minimum(np.searchsorted(sorted_raw, raw), len(sorted_raw) - 1)
        found = sorted_raw[pos] == raw
        return np.where(found, order[pos] + 1, UNKNOWN).astype(np.int32)

    def decode(self, idx: np.ndarray) -> np.ndarray:
        """Indices 1..V -> raw ids (index 0 -> -1)."""
        idx = np.asarray(idx, dtype=np.int64)
        return np.where(idx > 0, self.raw_ids[np.maximum(idx - 1, 0)], -1)

    def fingerprint(self) -> str:
        import hashlib
        return hashlib.blake2b(self.raw_ids.tobytes(), digest_size=8).hexdigest()

    def to_arrow(self) -> pa.Table:
        return pa.table({"index": pa.array(np.arange(1, self.n_items + 1, dtype=np.int32)),
                         "raw_id": pa.array(self.raw_ids), "train_count": pa.array(self.train_counts)})

    def write(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            pq.write_table(self.to_arrow(), tmp, compression="zstd")

    @classmethod
    def read(cls, path: str | Path) -> "ItemIndex":
        t = pq.read_table(path)
        return cls(t.column("raw_id").to_numpy().astype(np.int64),
                   t.column("train_count").to_numpy().astype(np.int64))


def encode_splits(parts: dict[str, Sessions]) -> tuple[ItemIndex, dict[str, Sessions], dict]:
    """Build the index from `parts["train"]` and encode every split; stats count unseen items."""
    index = ItemIndex.from_train(parts["train"])
    encoded: dict[str, Sessions] = {}
    stats: dict = {"items": index.n_items}
    for name, s in parts.items():
        enc = s.with_items(index.encode(s.items))
        encoded[name] = enc
        unseen = enc.items == UNKNOWN
        if name != "train":
            last = enc.items[enc.offsets[1:] - 1] if len(enc) else np.zeros(0, np.int32)
            stats[name] = {
                "events": int(enc.n_events),
                "unseen_events": int(unseen.sum()),
                "unseen_items": int(len(np.unique(s.items[unseen]))),
                "unseen_last_item_sessions": int((last == UNKNOWN).sum()),
                "sessions": int(len(enc)),
            }
    return index, encoded, stats
