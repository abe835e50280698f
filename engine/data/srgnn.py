"""SR-GNN's published benchmarks (Diginetica, YooChoose 1/64) as a data format: a folder with two pickles.

    all_train_seq.txt[.gz]   list of training sessions in date order, each a list of item ids (ints >= 1)
    test.txt[.gz]            (prefixes, labels): each test session s of length n contributes the pairs
                             s[:-1] -> s[-1], s[:-2] -> s[-2], ..., s[:1] -> s[1], in that order

Both are read with `load_pickle`, the loader for untrusted pickles: its `SafeUnpickler` refuses
every class (a file holding anything but plain lists, tuples and numbers is an InputError naming the
file and the refused `module.name`, never code execution), and a stream over MAX_PICKLE_BYTES, a tree
of more than MAX_PICKLE_VALUES values (memo references counted each time they appear) or deeper than
MAX_PICKLE_DEPTH is refused before anything expands it. Plain or gzip is found from the magic bytes, not the name. The structure is checked (errors
name the file and the first bad position), the test sessions are rebuilt from their prefix groups (a
group runs from its longest prefix down to length 1; every pair must agree with its group's session)
and both parts become the canonical events tables of `engine.data.formats` (key `session_key`).

The files carry no times, so the timestamps are synthetic and only keep the published order: session
i (train sessions in file order, then the test sessions in file order) starts at
i * SESSION_SPACING_MS (one minute) after 1970-01-01, and its events are EVENT_SPACING_MS (1 ms) apart.
The split stage's `test_file` mode then keeps the test sessions exactly and takes validation from the
latest train sessions; `SRGNN_DATA_DEFAULTS` are the pipeline parameters that keep the data unchanged.
"""

from __future__ import annotations

import gzip
import pickle
import reprlib
import zlib
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.data.format_specs import SRGNN_DATA_DEFAULTS, srgnn_files  # noqa: F401 (re-exported)
from engine.data.formats import ReadResult
from engine.data.sessions import csr_gather, row_ids

SESSION_SPACING_MS = 60_000    # start of session i + 1 - start of session i
EVENT_SPACING_MS = 1           # between consecutive events of a session
VIEW = 0                       # event code of a view (engine.data.sessions.EVENT_TYPES)
_SHOWN = 8                     # items of a session quoted in a message


# Limits of `load_pickle`, for files from anywhere. An honest file is far below them (Diginetica's
# train file: 4.2 MB unpickled, 1.1M values, depth 2; the test file depth 3); a crafted one must be
# refused before it costs gigabytes: pickle's memo lets 200 KB refer to one list 10^8 times.
MAX_PICKLE_BYTES = 256 << 20       # uncompressed stream; bounds the memory of unpickling itself
MAX_PICKLE_VALUES = 50_000_000     # entries of every list, tuple, dict and set, shared ones each time
MAX_PICKLE_DEPTH = 16              # nesting of containers
_CONTAINERS = (list, tuple, dict, set, frozenset)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every class, so a pickle can only build lists, tuples, dicts, sets
    and plain values: `find_class` is the only way a crafted file reaches `os.system` or any other
    callable (REDUCE, BUILD, INST and OBJ all need a class or function it returns)."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        raise InputError(f"{self.path}: refused to load class {module}.{name}: an SR-GNN pickle holds "
                         f"only lists of ints (the file is corrupt or was crafted to run code)")


class _ByteBudget:
    """A binary file that raises InputError once more than `limit` bytes are read from it: the
    unpickler reads through it, so an oversized (or decompression-bomb) stream stops at the limit."""

    def __init__(self, f: BinaryIO, limit: int, path: Path) -> None:
        self.f, self.left, self.limit, self.path = f, limit, limit, path

    def _take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise InputError(f"{self.path}: the pickle is over {self.limit:,} bytes uncompressed, the "
                             f"limit for an SR-GNN file; refused while loading (a file this large is "
                             f"corrupt or crafted)")

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(self.left + 1 if n is None or n < 0 else min(n, self.left + 1))
        self._take(len(data))
        return data

    def readinto(self, buf) -> int:
        n = self.f.readinto(memoryview(buf)[:self.left + 1])
        self._take(n)
        return n

    def peek(self, n: int = 0) -> bytes:
        # lets the C unpickler parse from 64 KB windows (it reads() what it consumed), instead of
        # calling read() once per opcode: 0.3 s against 1.5 s for Diginetica's train file
        return self.f.peek(n)

    def readline(self, size: int = -1) -> bytes:
        data = self.f.readline(self.left + 1 if size is None or size < 0 else min(size, self.left + 1))
        self._take(len(data))
        return data


def _check_shape(obj: Any, path: Path, max_values: int, max_depth: int) -> None:
    """Refuse an unpickled object whose tree, shared references expanded, holds more than
    `max_values` values or nests deeper than `max_depth`, or that contains itself.

    Iterative, with one visit per distinct container: a memo bomb (one list referred to 10^8 times)
    is counted in the time of its few distinct lists, never expanded; a chain 200,000 deep stops at
    `max_depth`. About 0.3 s for Diginetica's 186K sessions.
    """
    if type(obj) not in _CONTAINERS:
        return
    values: dict[int, int] = {}          # id of a counted container -> values in its tree
    active: set[int] = set()             # ids of the containers on the current path
    stack = [_Frame(obj)]
    active.add(id(obj))
    while stack:
        top = stack[-1]
        for child in top.children or ():
            cid = id(child)
            n = values.get(cid)
            if n is None:
                if cid in active:
                    raise InputError(f"{path}: a container refers to itself (at depth {len(stack)}); "
                                     f"an SR-GNN pickle holds plain lists of ints")
                if len(stack) >= max_depth:
                    raise InputError(f"{path}: nested more than {max_depth} levels deep; an SR-GNN "
                                     f"pickle holds lists of lists of ints (refused while loading: the "
                                     f"file is corrupt or crafted)")
                frame = _Frame(child)
                if frame.children is not None:     # it holds containers: count them first
                    stack.append(frame)
                    active.add(cid)
                    break
                n = values[cid] = frame.values     # a list of plain values: a session
            top.values += n
            if top.values > max_values:
                _too_many(path, max_values)
        else:
            stack.pop()
            active.discard(id(top.obj))
            values[id(top.obj)] = top.values
            if stack:
                stack[-1].values += top.values
                if stack[-1].values > max_values:
                    _too_many(path, max_values)
    if top.values > max_values:
        _too_many(path, max_values)


def _too_many(path: Path, max_values: int) -> None:
    raise InputError(f"{path}: holds more than {max_values:,} values (lists referred to several times "
                     f"count each time); refused while loading, before it is expanded (the file is "
                     f"corrupt or crafted to exhaust memory)")


class _Frame:
    """A container being counted: its values so far, and an iterator over the containers among
    its entries (None when it has none, told apart at C speed: the common case, a session)."""

    __slots__ = ("obj", "values", "children")

    def __init__(self, obj: Any) -> None:
        entries = (obj, obj.values()) if isinstance(obj, dict) else (obj,)
        self.obj, self.values = obj, sum(len(e) for e in entries)
        self.children: Any = None
        if not all(set(map(type, e)).isdisjoint(_CONTAINERS) for e in entries):
            self.children = (x for e in entries for x in e if type(x) in _CONTAINERS)


def is_gzip(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes (its name is not trusted)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def load_pickle(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES, max_values: int = MAX_PICKLE_VALUES,
                max_depth: int = MAX_PICKLE_DEPTH) -> Any:
    """The object in a plain or gzip pickle (found from the magic bytes) from an untrusted source:
    through `SafeUnpickler` (no classes), reading at most `max_bytes`, and refused unless its tree
    holds at most `max_values` values nested at most `max_depth` deep (checked before it is returned,
    so no caller ever expands a bomb)."""
    path = Path(path)
    kind = "pickle"
    try:
        if is_gzip(path):
            kind = "gzip-compressed pickle"
            with gzip.open(path, "rb") as f:
                obj = SafeUnpickler(_ByteBudget(f, max_bytes, path), path).load()
        else:
            with open(path, "rb") as f:
                obj = SafeUnpickler(_ByteBudget(f, max_bytes, path), path).load()
    except InputError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read it as a {kind} ({type(e).__name__}: {e})") from None
    except MemoryError:
        raise InputError(f"{path}: ran out of memory unpickling it (limit {max_bytes:,} bytes)") from None
    except Exception as e:   # UnpicklingError, ValueError, ...: whatever a broken stream raises
        raise InputError(f"{path}: not a valid Python pickle ({type(e).__name__}: {e}); expected "
                         f"SR-GNN's {path.name} (a pickle of lists of ints)") from None
    _check_shape(obj, path, max_values, max_depth)
    return obj


# ---- structure checks -----------------------------------------------------------------------------
class _Repr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        return _int_text(x)


_REPR = _Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxstring, _REPR.maxother = 2, 6, 6, 30, 30


def _describe(x: Any) -> str:
    """'int 3', "str '4'", 'list [[1, 2], [...]]': bounded in time and depth (reprlib), and an int
    too long to print in decimal (over Python's 4,300 digits) is described by its size."""
    text = _REPR.repr(x)
    return f"{type(x).__name__} {text if len(text) <= 40 else text[:40] + '...'}"


def _int_text(x: int) -> str:
    return str(x) if x.bit_length() <= 256 else f"of {x.bit_length():,} bits"


def _clip(items: list) -> str:
    return str(items if len(items) <= _SHOWN else items[:_SHOWN] + ["..."])


def _flatten(path: Path, what: str, seqs: Any) -> tuple[np.ndarray, np.ndarray]:
    """A list of non-empty lists of positive ints as (flat int64 values, int64 offsets).

    The common case is checked in bulk (a set of types, one `np.fromiter`); only a bad file is walked
    element by element, to name the first bad position.
    """
    if not isinstance(seqs, (list, tuple)):
        raise InputError(f"{path}: {what}: expected a list of sessions (lists of item ids), found "
                         f"{_describe(seqs)}")
    if not seqs:
        raise InputError(f"{path}: {what}: is empty; expected at least one session")
    if not set(map(type, seqs)) <= {list, tuple}:
        i = next(i for i, s in enumerate(seqs) if type(s) not in (list, tuple))
        raise InputError(f"{path}: {what}[{i}]: expected a list of item ids, found {_describe(seqs[i])}")
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    if (lengths == 0).any():
        i = int(np.argmax(lengths == 0))
        raise InputError(f"{path}: {what}[{i}]: is an empty list; expected at least one item id")
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # bool is a subclass of int: `type(x) is int` (not isinstance) keeps True out
    if set(map(type, chain.from_iterable(seqs))) != {int}:
        for i, s in enumerate(seqs):
            for j, x in enumerate(s):
                if type(x) is not int:
                    raise InputError(f"{path}: {what}[{i}][{j}]: expected an item id (an int >= 1), "
                                     f"found {_describe(x)}")
    try:
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(offsets[-1]))
    except OverflowError:
        flat = None
    if flat is None or (flat <= 0).any():
        k = int(np.argmax(flat <= 0)) if flat is not None else \
            next(k for k, x in enumerate(chain.from_iterable(seqs)) if not 0 < x < 2 ** 63)
        i = int(np.searchsorted(offsets, k, side="right") - 1)
        j = k - int(offsets[i])
        raise InputError(f"{path}: {what}[{i}][{j}]: item id {_int_text(seqs[i][j])} is out of range; expected an "
                         f"int from 1 to 2**63 - 1")
    return flat, offsets


def _labels(path: Path, labels: Any) -> np.ndarray:
    """The test labels (a list of positive ints) as int64; errors name the first bad label."""
    if not isinstance(labels, (list, tuple)):
        raise InputError(f"{path}: labels (the second element): expected a list of item ids, found "
                         f"{_describe(labels)}")
    if not set(map(type, labels)) <= {int}:
        j = next(j for j, x in enumerate(labels) if type(x) is not int)
        raise InputError(f"{path}: labels[{j}]: expected an item id (an int >= 1), found "
                         f"{_describe(labels[j])}")
    try:
        flat = np.fromiter(labels, dtype=np.int64, count=len(labels))
    except OverflowError:
        flat = None
    if flat is None or (flat <= 0).any():
        j = int(np.argmax(flat <= 0)) if flat is not None else \
            next(j for j, x in enumerate(labels) if not 0 < x < 2 ** 63)
        raise InputError(f"{path}: labels[{j}]: item id {_int_text(labels[j])} is out of range; expected an int "
                         f"from 1 to 2**63 - 1")
    return flat


# ---- the test file: rebuild the sessions from their prefix groups ----------------------------------
def rebuild_test_sessions(path: Path, obj: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    """(flat items, offsets, stats) of the sessions behind a test pickle `(prefixes, labels)`.

    Pair p = (prefixes[p], labels[p]). A group starts at pair 0 and after every pair whose prefix has
    length 1; inside a group the prefix lengths must fall by one, down to 1, and the group's session is
    its first prefix + its first label. Every pair is then checked against its session: prefix p must
    be the session's first len(prefix p) items and label p the next one. Vectorised over all pairs.
    """
    if not isinstance(obj, (list, tuple)) or len(obj) != 2:
        found = (f"{type(obj).__name__} of length {len(obj)}" if isinstance(obj, (list, tuple))
                 else _describe(obj))
        raise InputError(f"{path}: expected a pair (prefixes, labels), found {found}")
    prefixes, labels = obj
    flat, poff = _flatten(path, "prefixes", prefixes)
    lab = _labels(path, labels)
    if len(lab) != len(prefixes):
        raise InputError(f"{path}: {len(prefixes):,} prefixes but {len(lab):,} labels; expected one label "
                         f"per prefix")
    n_pairs = len(lab)
    plen = np.diff(poff)
    is_start = np.ones(n_pairs, dtype=bool)
    is_start[1:] = plen[:-1] == 1
    starts = np.flatnonzero(is_start)
    gid = np.cumsum(is_start) - 1                      # group (= session) of each pair
    rank = np.arange(n_pairs) - starts[gid]
    want = plen[starts][gid] - rank                    # the length each pair's prefix must have
    bad = np.flatnonzero(plen != want)
    if len(bad):
        p = int(bad[0])
        raise InputError(f"{path}: pair {p}: prefix of length {plen[p]}, expected length {want[p]} (its "
                         f"group starts at pair {starts[gid[p]]} with a prefix of length "
                         f"{plen[starts[gid[p]]]} and must run down to length 1)")
    if plen[-1] != 1:
        raise InputError(f"{path}: pair {n_pairs - 1}: the last group ends with a prefix of length "
                         f"{plen[-1]}; expected it to run down to length 1 (a truncated file?)")
    # session g = prefix of its first pair + that pair's label
    slen = plen[starts] + 1
    soff = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(slen, out=soff[1:])
    items = np.empty(int(soff[-1]), dtype=np.int64)
    last = soff[1:] - 1
    body = np.ones(len(items), dtype=bool)
    body[last] = False
    items[body] = flat[csr_gather(poff, starts)[1]]
    items[last] = lab[starts]
    # every pair against its session: element k of prefix p is item k of session gid[p]; the label
    # is item plen[p]
    pair_of = row_ids(poff)
    k = np.arange(len(flat)) - poff[pair_of]
    prefix_bad = flat != items[soff[gid[pair_of]] + k]
    label_bad = lab != items[soff[gid] + plen]
    bad_pairs = np.flatnonzero(label_bad | (np.bincount(pair_of[prefix_bad], minlength=n_pairs) > 0))
    if len(bad_pairs):
        p = int(bad_pairs[0])
        g = int(gid[p])
        sess = items[soff[g]:soff[g + 1]].tolist()
        raise InputError(f"{path}: pair {p} ({_clip(list(prefixes[p]))} -> {lab[p]}) does not agree "
                         f"with the session of its group (pairs {starts[g]}..{starts[g] + slen[g] - 2}, "
                         f"session {_clip(sess)}): expected {_clip(sess[:plen[p]])} -> {sess[plen[p]]}")
    stats = {"sessions": int(len(starts)), "prefixes": int(n_pairs),
             "longest_session": int(slen.max())}
    return items, soff, stats


# ---- events tables -----------------------------------------------------------------------------------
def _events(items: np.ndarray, offsets: np.ndarray, first_session: int) -> pa.Table:
    """Canonical events of sessions (flat items + offsets) numbered from `first_session`: synthetic
    session keys and timestamps in that order (see the module docstring)."""
    sid = row_ids(offsets)
    pos = np.arange(len(items), dtype=np.int64) - offsets[sid]
    key = sid + first_session
    return pa.table({
        "session_key": pa.array(key, pa.int64()),
        "item": pa.array(items, pa.int64()),
        "timestamp": pa.array(key * SESSION_SPACING_MS + pos * EVENT_SPACING_MS, pa.int64()),
        "event": pa.array(np.full(len(items), VIEW, dtype=np.int8), pa.int8()),
    })


def _reader_stats(path: Path, events: int, extra: dict) -> dict:
    return {"path": str(path), "format": "srgnn", "compression": "gzip" if is_gzip(path) else "none",
            "rows_read": events, "rows_valid": events, "bad_rows": {}, **extra}


def read_srgnn(folder: str | Path, progress: ProgressFn | None = None) -> tuple[ReadResult, ReadResult]:
    """(train, test) canonical events of an SR-GNN folder; InputError naming the file on any problem.

    Train sessions get keys 0..T-1 in file order, test sessions T.. in the order of their groups; the
    stats are the other readers' (`rows_read` = events) plus session and prefix counts.
    """
    files = srgnn_files(folder)
    rep = StageReporter("ingest", progress, total=3, unit="steps")
    rep(0, None, f"reading {files['train'].name}")
    train, toff = _flatten(files["train"], "sessions", load_pickle(files["train"]))
    n_train = len(toff) - 1
    rep.step(f"{n_train:,} train sessions; reading {files['test'].name}")
    test_obj = load_pickle(files["test"])
    rep.step("rebuilding the test sessions from their prefixes")
    test, soff, tstats = rebuild_test_sessions(files["test"], test_obj)
    train_stats = {"sessions": n_train, "prefixes": int(len(train) - n_train),
                   "longest_session": int(np.diff(toff).max())}
    out = (ReadResult(_events(train, toff, 0), "session_key",
                      _reader_stats(files["train"], len(train), train_stats)),
           ReadResult(_events(test, soff, n_train), "session_key",
                      _reader_stats(files["test"], len(test), tstats)))
    rep.step(f"{n_train:,} train sessions, {tstats['sessions']:,} test sessions "
             f"({tstats['prefixes']:,} prefixes)")
    return out
