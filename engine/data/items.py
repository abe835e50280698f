"""Item index: the train vocabulary mapped to 1..V (0 is padding / unknown item).

Items are numbered by descending train frequency (ties by raw id), so index order is popularity
order. Validation and test events whose item never occurs in train map to 0; they are counted, and
the evaluator reports targets that are 0 as misses it could never have hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.core.atomic import atomic_path
from engine.data.sessions import Sessions

UNKNOWN = 0
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
# What an item id is, everywhere (the log readers, the CLI, the app, the HTTP API; SR-GNN files start at 1):
# a whole number from 0 to 2**63 - 1 (int64 in parquet and the index; logs never hold negative ids)
ITEM_ID_MIN, ITEM_ID_MAX = 0, INT64_MAX
ITEM_ID_TEXT = f"whole numbers from {ITEM_ID_MIN} to {ITEM_ID_MAX}"
_ID_DIGITS = len(str(ITEM_ID_MAX))          # 19
_ID_TOKEN = re.compile(r"[0-9]+")            # ASCII digits only: str.isdigit() also takes '²' and '٣'
_LUT_MIN = 1 << 16   # encode() this many ids or more with a lookup table when the id range is compact


def parse_item_id(token: str) -> int:
    """One typed item id ('355908') as an int; InputError saying what an id is otherwise.

    The length is checked before `int()`: a 5,000-digit token would otherwise hit Python's
    4,300-digit conversion limit (a ValueError, not a message).
    """
    from engine.core.errors import InputError
    negative = token.startswith("-")
    if not _ID_TOKEN.fullmatch(token[negative:]):
        raise InputError(f"item id {_clip(token)!r} is not a number (item ids are {ITEM_ID_TEXT}; type "
                         f"ids separated by spaces or commas)")
    digits = token[negative:].lstrip("0") or "0"     # leading zeros: allowed, as the log readers allow them
    if negative or len(digits) > _ID_DIGITS or int(digits) > ITEM_ID_MAX:
        raise InputError(f"item id {_clip(token)} is out of range: item ids are {ITEM_ID_TEXT}")
    return int(digits)


def _clip(token: str) -> str:
    return token if len(token) <= 40 else f"{token[:20]}... ({len(token):,} characters)"


def parse_item_ids(text: str) -> list[int]:
    """'355908, 248676 1' -> [355908, 248676, 1]; the first bad token is a clear error."""
    return [parse_item_id(t) for t in text.replace(",", " ").split()]


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
