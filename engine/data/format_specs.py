"""What each raw log format looks like (header, separators, columns, an example row), why a row can
be skipped, and the checks made before a file is opened. Pure Python: `sessrec data status` and
the app import it without numpy or pyarrow; the reader itself is `engine.data.formats`."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import InputError
from engine.core.schema import DataFormat

# Reasons a row is skipped. A row is counted once, under the first reason that applies in this order.
REASONS: tuple[str, ...] = ("missing_field", "non_numeric_id", "bad_timestamp", "unknown_event")
# ... and how each reads in a sentence (missing_field also counts rows with too few or too many fields)
REASON_LABELS: dict[str, str] = {"missing_field": "missing or extra fields",
                                 "non_numeric_id": "non-numeric or negative id",
                                 "bad_timestamp": "bad timestamp", "unknown_event": "unknown event type"}
# Column kinds. Ids are non-negative integers (NO_VISITOR = -1 is a sentinel downstream); labels are
# session or user columns holding text (numbered in order of first appearance); times are epoch ms
# (RetailRocket), seconds with decimals (RSC15), a date plus an offset in ms (Diginetica), or, in the
# events format, epoch ms / us / ns (decimals allowed) or ISO-8601 text (engine.data.log_values).
ID, MS, OFFSET_MS, SECONDS, DATE, EVENT = "id", "ms", "offset_ms", "seconds", "date", "event"
LABEL, ISO, EPOCH_MS, EPOCH_US, EPOCH_NS = "label", "iso", "epoch_ms", "epoch_us", "epoch_ns"
EPOCH_UNITS = (EPOCH_MS, EPOCH_US, EPOCH_NS)
TIME_KINDS = (MS, OFFSET_MS, SECONDS, DATE, ISO, *EPOCH_UNITS)
# what the events format's --time-format means as a kind (auto: decided from the first values read)
TIME_FORMAT_KINDS = {"s": SECONDS, "ms": EPOCH_MS, "us": EPOCH_US, "ns": EPOCH_NS, "iso": ISO}
KIND_TEXT = {ID: "a whole number 0 .. 2**63 - 1", LABEL: "any text", MS: "epoch milliseconds",
             OFFSET_MS: "milliseconds", SECONDS: "epoch seconds", DATE: "a date YYYY-MM-DD",
             EVENT: "an event type", ISO: "ISO-8601 time", EPOCH_MS: "epoch milliseconds",
             EPOCH_US: "epoch microseconds", EPOCH_NS: "epoch nanoseconds"}
DELIMITER_NAMES = {",": "comma ','", ";": "semicolon ';'", "\t": "tab", "|": "pipe '|'"}


@dataclass(frozen=True)
class FormatSpec:
    """What a raw file of one format looks like and which of its columns feed the canonical table."""

    name: str
    title: str                      # for messages
    header: tuple[str, ...]         # expected header columns, in file order (compared case-insensitively)
    delimiters: tuple[str, ...]     # accepted field separators, the usual one first
    key: str                        # canonical key column: "visitor" or "session_key"
    key_column: str                 # file column holding the key
    item_column: str
    kinds: dict[str, str]           # file column -> kind, for every column that is read
    example: str                    # one valid data row, for messages

    @property
    def time_columns(self) -> tuple[str, ...]:
        return tuple(c for c, k in self.kinds.items() if k in TIME_KINDS)

    @property
    def event_column(self) -> str | None:
        return next((c for c, k in self.kinds.items() if k == EVENT), None)

    def header_text(self, delimiter: str | None = None) -> str:
        return (delimiter or self.delimiters[0]).join(self.header)

    def delimiter_text(self) -> str:
        return " or ".join(DELIMITER_NAMES.get(d, repr(d)) for d in self.delimiters)


FORMAT_SPECS: dict[str, FormatSpec] = {
    "retailrocket": FormatSpec(
        name="retailrocket", title="RetailRocket events.csv",
        header=("timestamp", "visitorid", "event", "itemid", "transactionid"), delimiters=(",",),
        key="visitor", key_column="visitorid", item_column="itemid",
        kinds={"timestamp": MS, "visitorid": ID, "event": EVENT, "itemid": ID},
        example="1433221332117,257597,view,355908,"),
    "rsc15": FormatSpec(
        name="rsc15", title="YooChoose/RSC15 clicks",
        header=("SessionId", "ItemId", "Time"), delimiters=("\t", ","),
        key="session_key", key_column="SessionId", item_column="ItemId",
        kinds={"SessionId": ID, "ItemId": ID, "Time": SECONDS},
        example="1\t214536502\t1396860669.277"),
    "diginetica": FormatSpec(
        name="diginetica", title="Diginetica train-item-views",
        header=("session_id", "user_id", "item_id", "timeframe", "eventdate"), delimiters=(";",),
        key="session_key", key_column="session_id", item_column="item_id",
        kinds={"session_id": ID, "item_id": ID, "timeframe": OFFSET_MS, "eventdate": DATE},
        example="1;NA;81766;526309;2016-05-09"),
}


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def stat_mode(path: str | Path, what: str, missing: str = "file not found") -> int:
    """`os.stat(path).st_mode`; InputError naming `path` and saying why not: `missing` when nothing is
    there, a symbolic link loop or a broken link as such (a loop reads as 'not found' to exists())."""
    try:
        return os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link loop (following its links leads back to "
                             f"itself); expected {what}") from None
        if isinstance(e, FileNotFoundError):
            if os.path.islink(path):
                raise InputError(f"{path}: is a broken symbolic link (to {os.readlink(path)}, which "
                                 f"does not exist); expected {what}") from None
            raise InputError(f"{path}: {missing}; expected {what}") from None
        raise InputError(f"{path}: cannot read it ({e.strerror or e}); expected {what}") from None


def require_regular_file(path: str | Path, what: str) -> None:
    """InputError unless `path` is a regular file (or a link to one); `what` says what was expected.

    Checked with stat, without opening: opening a FIFO blocks until a writer comes, and a directory
    or a device must be refused before anything is registered or built from it.
    """
    mode = stat_mode(path, what)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise InputError(f"{path}: is {kind}, not a regular file; expected {what}")


EVENTS_FILE_TEXT = "a click log (CSV/TSV, Parquet or JSON Lines, plain or compressed)"
ITEMS_FILE_TEXT = ("an item table (CSV/TSV or Parquet with a header line) or RetailRocket's "
                   "item_properties_part*.csv and category_tree.csv")


def spec_file_text(fmt: str) -> str:
    """What a file of format `fmt` is, for messages ("a RetailRocket events.csv file with header ...")."""
    if fmt == DataFormat.SRGNN:
        return SRGNN_FOLDER_TEXT
    if fmt == DataFormat.EVENTS:
        return EVENTS_FILE_TEXT
    spec = FORMAT_SPECS.get(fmt)
    return f"a {spec.title} file with header {spec.header_text()!r}" if spec else "a click log"


# ---- SR-GNN folders: the source is a folder with two pickles (read by engine.data.srgnn) ----------
# role -> file stem; each file may be plain (".txt") or gzip-compressed (".txt.gz")
SRGNN_FILES: dict[str, str] = {"train": "all_train_seq", "test": "test"}
SRGNN_FOLDER_TEXT = ("an SR-GNN folder holding all_train_seq.txt and test.txt (each plain or .gz), "
                     "as SR-GNN's preprocess.py writes them")

# Pipeline parameters (DataConfig fields) that keep the published data as it is. One place: defined
# here so that the CLI reads them without numpy, re-exported by engine.data.srgnn; `sessrec data
# import --format srgnn` applies them, user flags override. The files are already preprocessed: no
# session is dropped (all have >= 2 items) or cut (the longest has 146 items, 74 in test), no item
# is filtered, the test file is the test split, validation is the latest 10% of the training
# sessions with no blackout gap (the synthetic times have no days to leave out).
SRGNN_DATA_DEFAULTS: dict[str, Any] = {
    "min_session_length": 2,
    "max_session_length": 1000,
    "min_item_support": 1,
    "split_mode": "test_file",
    "val_ratio": 0.1,
    "blackout_days": 0.0,
}


def source_is_folder(fmt: str) -> bool:
    """Whether a dataset of format `fmt` is imported from a folder (srgnn) rather than one file."""
    return fmt == DataFormat.SRGNN


def srgnn_files(folder: str | Path) -> dict[str, Path]:
    """{"train": .../all_train_seq.txt[.gz], "test": .../test.txt[.gz]} of an SR-GNN folder.

    InputError naming the folder when it is not a folder, a file is missing, both the plain and the
    .gz name exist (which one is meant?), or a file is not a regular file (a FIFO would hang).
    """
    folder = Path(folder)
    mode = stat_mode(folder, SRGNN_FOLDER_TEXT, missing="folder not found")
    if not stat.S_ISDIR(mode):
        raise InputError(f"{folder}: is not a folder; format srgnn expects {SRGNN_FOLDER_TEXT}")
    out: dict[str, Path] = {}
    for role, stem in SRGNN_FILES.items():
        # lexists: a link that leads nowhere (a loop, a broken link) is found, and then named as such
        found = [folder / f"{stem}{ext}" for ext in (".txt", ".txt.gz") if os.path.lexists(folder / f"{stem}{ext}")]
        if not found:
            raise InputError(f"{folder}: has no {stem}.txt or {stem}.txt.gz; expected {SRGNN_FOLDER_TEXT}")
        if len(found) > 1:
            raise InputError(f"{folder}: has both {found[0].name} and {found[1].name}; keep one of them")
        require_regular_file(found[0], f"SR-GNN's {stem}.txt pickle")
        out[role] = found[0]
    return out


def require_source(path: str | Path, fmt: str) -> None:
    """InputError unless `path` is what format `fmt` imports: a regular file, or an SR-GNN folder."""
    if source_is_folder(fmt):
        srgnn_files(path)
    else:
        require_regular_file(path, spec_file_text(fmt))
