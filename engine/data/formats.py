"""The click-log reader: any CSV/TSV, Parquet or JSON Lines log into one canonical events table.

Every log ends up as the same four columns, in this order:

    <key> int64     "visitor" (a user column: sessions are cut at inactivity gaps) or "session_key"
    item int64      raw item id
    timestamp int64 ms since the epoch (UTC)
    event int8      code into engine.data.sessions.EVENT_TYPES (a log without event types: all views)

One reader, two ways of saying what the columns are: the events format names them
(`--columns item=product_id,time=ts,user=uid[,session=sid][,event=type]`, `--event-map`,
`--time-format`; the file type, compression and CSV delimiter are found from the file), and the
RetailRocket, RSC15 and Diginetica formats are presets of it with fixed columns and a fixed header
(`engine.data.format_specs.FORMAT_SPECS`). Files are streamed in record batches: memory holds the
typed output columns, never the file's text.

Values are parsed and checked by `engine.data.log_values`, batch by batch. A CSV file is first read
with typed columns on pyarrow's threads; a clean file never leaves that path. If a batch fails (a
value that does not parse, a row with the wrong number of fields) or holds a bad value, the file is
read again with every column as text on one thread, so that each row's line number is known, and
bad rows are skipped and counted per reason. Parquet and JSON Lines batches carry their row numbers,
so they are checked as they come. Rows are kept in file order; sessionize sorts. Blank lines are
ignored (not counted as bad rows).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import time
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.core.config import DataConfig
from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.core.schema import DataFormat, EventType, LogRole, TimeFormat, values
from engine.data.format_specs import (
    DATE,
    DELIMITER_NAMES,
    EPOCH_MS,
    EPOCH_UNITS,
    EVENT,
    EVENTS_FILE_TEXT,
    FORMAT_SPECS,
    ID,
    ISO,
    LABEL,
    MS,
    OFFSET_MS,
    REASONS,
    SECONDS,
    TIME_FORMAT_KINDS,
    TIME_KINDS,
    FormatSpec,
    require_regular_file,
    spec_file_text,
)
from engine.data.log_values import (
    DEFAULT_EVENTS,
    MS_PER_DAY,
    EventLookup,
    Parsed,
    as_plain,
    epoch_unit,
    is_text,
    parse_column,
    text_looks_numeric,
    text_looks_whole,
)

MAX_FIRST_LINES = 5
BLOCK_SIZE = 4 << 20  # 4 MiB blocks: fewer, larger chunks parse faster than the 1 MiB default
MAX_BLOCK_SIZE = 1 << 30  # the longest line read (twice it, after Latin-1 -> UTF-8): pyarrow's limit is 2 GiB
BATCH_ROWS = 1 << 20      # Parquet and JSON Lines record batches
SAMPLE_BYTES = 1 << 20    # what decides the events format's automatic kinds (a CSV's first MiB)
KEY_AUTO, TIME_AUTO = "key_auto", "time_auto"   # resolved from the first values read

_REASON_OF_KIND = {ID: "non_numeric_id", LABEL: "non_numeric_id", EVENT: "unknown_event",
                   **{k: "bad_timestamp" for k in TIME_KINDS}}
_FAST_TYPE = {ID: pa.int64(), MS: pa.int64(), OFFSET_MS: pa.int64(), SECONDS: pa.float64(),
              DATE: pa.date32(), EVENT: pa.string(), LABEL: pa.string(), ISO: pa.string(),
              **{k: pa.float64() for k in EPOCH_UNITS}}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"),
          (b"\xfd7zXZ\x00", "xz"), (b"\x04\x22\x4d\x18", "lz4"))
_CSV_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class ReadResult:
    table: pa.Table   # canonical events: <key>, item, timestamp, event (see module docstring)
    key: str          # "visitor" or "session_key"
    stats: dict       # path, format, compression, rows_read, rows_valid, bad_rows (+ the events format's)


# ---- public API --------------------------------------------------------------------------------

def read_events(path: str | Path, fmt: str | DataConfig, progress: ProgressFn | None = None) -> ReadResult:
    """Read a click log into the canonical events table: `fmt` is a preset's name, or a DataConfig
    (its format, and for the events format its columns, event map and time format)."""
    plan = plan_read(Path(path), fmt)
    rep = StageReporter("ingest", progress, unit="rows")
    rep(0, None, f"reading {plan.path.name}")
    acc = _read(plan, rep)
    rows_read, rows_valid = acc.rows_read, acc.rows_valid
    rep(rows_read, rows_read, f"read {rows_read:,} rows")
    n_bad = rows_read - rows_valid
    bad_rows = acc.bad_row_stats()
    if rows_read == 0:
        raise InputError(f"{plan.path}: no data rows{' after the header' if plan.container == 'csv' else ''}; "
                         f"expected {plan.title} rows like {plan.example!r}")
    if rows_valid == 0:
        raise InputError(f"{plan.path}: no valid rows: all {n_bad:,} data rows are bad "
                         f"({_describe_bad(bad_rows, plan.numbered_by)}); expected {plan.title} rows like "
                         f"{plan.example!r}{_data_delimiter_hint(plan)}{_event_hint(plan, acc)}")
    table = acc.table(plan)
    stats: dict[str, Any] = {"path": str(plan.path), "format": plan.format, "compression": plan.compression or "none",
                             "rows_read": int(rows_read), "rows_valid": int(rows_valid), "bad_rows": bad_rows}
    if plan.numbered_by != "line":
        stats["numbered_by"] = plan.numbered_by
    if acc.unknown_events:
        stats["unknown_event_values"] = acc.unknown_events
    if plan.format == DataFormat.EVENTS:
        stats.update({"file_type": plan.container, "columns": {r: c for r, c in plan.roles.items()},
                      "time": plan.time_note})
        if plan.container == "csv":
            stats["delimiter"] = DELIMITER_NAMES.get(plan.delimiter, plan.delimiter)
    rep(rows_read, rows_read, f"{rows_valid:,} valid rows, {n_bad:,} bad")
    return ReadResult(table=table, key=plan.key, stats=stats)


def detect_format(path: str | Path) -> str:
    """Name of the preset whose header the file starts with; InputError if none matches.

    A header with the right columns but another separator still names its format (reading it then
    says which separator was found and which one is expected).
    """
    path = Path(path)
    head = _peek(path, None)
    for name, spec in FORMAT_SPECS.items():
        if _header_delimiter(spec, head.header, DELIMITER_NAMES) is not None:
            return name
    expected = "; ".join(f"{s.name}: {s.header_text()!r} ({s.delimiter_text()})"
                         for s in FORMAT_SPECS.values())
    raise InputError(f"{path}: header {_clip(head.header)!r} matches no known format; "
                     f"expected one of {expected}, or name its columns with --format events --columns")


# ---- the plan: what is read how ------------------------------------------------------------------

@dataclass
class ReadPlan:
    """How one file is read, from a preset or from the events format's mapping and the file itself."""

    path: Path
    format: str                      # the dataset format (a preset's name, or "events")
    title: str                       # for messages
    example: str                     # one valid row, for messages
    container: str                   # csv | parquet | jsonl
    compression: str | None
    key: str                         # "visitor" or "session_key"
    kinds: dict[str, str]            # file column -> kind, for every column read, in output order
    roles: dict[str, str]            # role -> file column
    header: tuple[str, ...] = ()     # csv: the file's column names, in file order
    delimiter: str = ","
    events: EventLookup = DEFAULT_EVENTS
    time_note: dict = field(default_factory=dict)   # events format: how the time column is read

    @property
    def key_column(self) -> str:
        return self.roles[LogRole.SESSION if self.key == "session_key" else LogRole.USER]

    @property
    def item_column(self) -> str:
        return self.roles[LogRole.ITEM]

    @property
    def event_column(self) -> str | None:
        return self.roles.get(LogRole.EVENT)

    @property
    def time_columns(self) -> tuple[str, ...]:
        return tuple(c for c, k in self.kinds.items() if k in TIME_KINDS or k == TIME_AUTO)

    @property
    def numbered_by(self) -> str:
        """What the numbers of bad rows count: CSV lines (the header is line 1), or data rows."""
        return "line" if self.container == "csv" else "row"


def plan_read(path: Path, fmt: str | DataConfig) -> ReadPlan:
    cfg = fmt if isinstance(fmt, DataConfig) else None
    name = cfg.format if cfg is not None else fmt
    spec = FORMAT_SPECS.get(name)
    if spec is not None:
        return _preset_plan(path, spec)
    if name == DataFormat.SRGNN:
        raise InputError(f"{path}: format srgnn is a folder of pickles, not a log file; read it with "
                         f"engine.data.srgnn.read_srgnn")
    if name != DataFormat.EVENTS:
        raise InputError(f"{path}: unknown format {name!r}; valid formats: "
                         f"{', '.join([*FORMAT_SPECS, DataFormat.EVENTS.value])}")
    if cfg is None:
        raise InputError(f"{path}: format events needs its columns (--columns item=COL,time=COL,user=COL)")
    return _events_plan(path, cfg)


def _preset_plan(path: Path, spec: FormatSpec) -> ReadPlan:
    head = _peek(path, spec)
    delimiter = _check_header(path, spec, head)
    roles = {LogRole.ITEM: spec.item_column,
             (LogRole.USER if spec.key == "visitor" else LogRole.SESSION): spec.key_column}
    if spec.event_column:
        roles[LogRole.EVENT] = spec.event_column
    kinds = dict(spec.kinds)
    return ReadPlan(path, spec.name, spec.title, spec.example, "csv", head.compression, spec.key, kinds,
                    {str(k): v for k, v in roles.items()}, header=spec.header, delimiter=delimiter)


def _events_plan(path: Path, cfg: DataConfig) -> ReadPlan:
    cols = cfg.log_columns()
    mapping = cfg.event_types()
    codes = {name: i for i, name in enumerate(values(EventType))}
    events = EventLookup(tuple(mapping), tuple(codes[t] for t in mapping.values())) if mapping else DEFAULT_EVENTS
    container, compression = probe_file(path)
    key = "session_key" if LogRole.SESSION in cols else "visitor"
    time_kind = TIME_AUTO if cfg.time_format == TimeFormat.AUTO else TIME_FORMAT_KINDS[str(cfg.time_format)]
    kinds: dict[str, str] = {}
    key_col = cols[LogRole.SESSION] if key == "session_key" else cols[LogRole.USER]
    for column, kind in ((key_col, KEY_AUTO), (cols[LogRole.ITEM], ID), (cols[LogRole.TIME], time_kind),
                         (cols.get(LogRole.EVENT), EVENT)):
        if column is None:
            continue
        if column in kinds:
            raise InputError(f"columns: column {column!r} is given for two roles; each role needs its own column")
        kinds[column] = kind
    roles = {str(r): c for r, c in cols.items() if not (r == LogRole.USER and key == "session_key")}
    role_of = {c: r for r, c in roles.items()}
    sample = {LogRole.ITEM: "355908", LogRole.TIME: "2015-05-03T03:00:00Z", LogRole.USER: "257597",
              LogRole.SESSION: "1", LogRole.EVENT: events.raw[0]}
    plan = ReadPlan(path, DataFormat.EVENTS.value, f"events log ({container})",
                    ", ".join(f"{c}: {sample[role_of[c]]}" for c in kinds), container, compression,
                    key, kinds, roles, events=events)
    if container == "csv":
        head = _peek(path, None)
        plan.header, plan.delimiter = sniff_header(path, head.header, list(kinds))
        plan.example = plan.delimiter.join(sample[role_of[c]] if c in role_of else "..." for c in plan.header)
    else:
        names = _columns_of(plan)
        missing = [c for c in kinds if c not in names]
        if missing:
            raise InputError(f"{path}: no column {', '.join(map(repr, missing))} (--columns); the file's "
                             f"columns are {_clip(', '.join(names), 300)}")
    plan.time_note = {"column": cols[LogRole.TIME], "format": str(cfg.time_format)}
    return plan


def probe_file(path: Path, what: str = EVENTS_FILE_TEXT) -> tuple[str, str | None]:
    """(file type csv | parquet | jsonl, compression) from the first bytes of the file (a text file's
    first bytes after decompressing it); `what` says what was expected, in messages."""
    require_regular_file(path, what)
    with open(path, "rb") as f:
        magic = f.read(8)
    if not magic:
        raise InputError(f"{path}: file is empty; expected {what}")
    if magic[:4] == b"PAR1":
        return "parquet", None
    if magic[:4] == b"PK\x03\x04":
        raise InputError(f"{path}: is a zip archive; unzip it and pass the file inside ({what})")
    compression = next((name for m, name in _MAGIC if magic.startswith(m)), None)
    head = _head_bytes(path, compression, 4096)
    if head[:4] == b"PAR1":
        raise InputError(f"{path}: is a {compression}-compressed Parquet file; decompress it (Parquet "
                         f"compresses its own columns)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise InputError(f"{path}: file is empty; expected {what}")
    return ("jsonl" if text[:1] == b"{" else "csv"), compression


def _head_bytes(path: Path, compression: str | None, n: int) -> bytes:
    try:
        with _stream(path, compression) as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read it as {compression or 'plain text'}: {e}") from None


def sniff_header(path: Path, header: str, wanted: list[str]) -> tuple[tuple[str, ...], str]:
    """(the header's column names, the delimiter) of a CSV/TSV file: the separator that splits the
    header into columns holding every named one (names compared exactly, then ignoring case)."""
    for exact in (True, False):
        for d in _CSV_DELIMITERS:
            names = tuple(c.strip().strip('"') for c in header.split(d))
            have = names if exact else tuple(n.lower() for n in names)
            if all((w if exact else w.lower()) in have for w in wanted):
                if len(set(names)) != len(names):
                    raise InputError(f"{path}: the header names a column twice: {_clip(header)!r}")
                if not exact:      # the file's spelling, so that the reader finds the columns
                    raise InputError(f"{path}: no column {', '.join(w for w in wanted if w not in names)!r} "
                                     f"(--columns); the header has {', '.join(names)} (names are "
                                     f"case-sensitive)")
                return names, d
    best = max(_CSV_DELIMITERS, key=header.count)
    names = [c.strip().strip('"') for c in header.split(best)]
    missing = [w for w in wanted if w not in names]
    raise InputError(f"{path}: no column {', '.join(map(repr, missing))} (--columns) in the header "
                     f"{_clip(header)!r}; expected a header line naming the columns, separated by "
                     f"comma, semicolon, tab or '|'")


def _columns_of(plan: ReadPlan) -> list[str]:
    if plan.container == "parquet":
        import pyarrow.parquet as pq
        try:
            return list(pq.ParquetFile(plan.path).schema_arrow.names)
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{plan.path}: cannot read it as Parquet: {e}") from None
    batch = next(_jsonl_batches(plan, names_only=True), None)
    return list(batch.schema.names) if batch is not None else []


# ---- file head (CSV): existence, compression, header ---------------------------------------------

@dataclass(frozen=True)
class _Head:
    compression: str | None   # "gzip" (or bz2, zstd, xz, lz4) or None
    header: str               # first line, without BOM and line end
    first_row: str            # second line (first data row), "" if none


def header_line(path: Path, what: str) -> str:
    """The first line of a text file (plain or compressed), without a BOM and its line end."""
    return _peek(path, None, what).header


def _peek(path: Path, spec: FormatSpec | None, what: str | None = None) -> _Head:
    """Check the file exists and is not empty; find its compression, header line and first row."""
    what = what or (spec_file_text(spec.name) if spec else "a click log")
    require_regular_file(path, what)
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:4] == b"PK\x03\x04":
        raise InputError(f"{path}: is a zip archive; unzip it and pass the file inside ({what})")
    compression = next((name for m, name in _MAGIC if magic.startswith(m)), None)
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression)
    try:
        if opener is not None or compression is None:
            with (opener or open)(path, "rb") as f:
                header = f.readline(1 << 16)
                first_row = f.readline(1 << 16)
        else:
            lines = _head_bytes(path, compression, 1 << 17).split(b"\n", 2)
            header, first_row = lines[0], lines[1] if len(lines) > 1 else b""
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise InputError(f"{path}: cannot read it as {compression or 'plain text'}: {e}") from None
    if not header.strip() and not first_row.strip():
        raise InputError(f"{path}: file is empty; expected {what} followed by one event per line")
    return _Head(compression, _line_text(header).lstrip("\ufeff"), _line_text(first_row))


def _line_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _split(line: str, delimiter: str) -> tuple[str, ...]:
    return tuple(c.strip().strip('"').lower() for c in line.split(delimiter))


def _header_delimiter(spec: FormatSpec, header: str, candidates) -> str | None:
    """The first of `candidates` that splits `header` into exactly the spec's columns, else None."""
    expected = tuple(c.lower() for c in spec.header)
    return next((d for d in candidates if _split(header, d) == expected), None)


def _check_header(path: Path, spec: FormatSpec, head: _Head) -> str:
    """The delimiter the file uses; InputError on a wrong header or a wrong delimiter."""
    delimiter = _header_delimiter(spec, head.header, spec.delimiters)
    if delimiter is not None:
        return delimiter
    other = _header_delimiter(spec, head.header, DELIMITER_NAMES)
    if other is not None:
        raise InputError(f"{path}: fields are separated by {DELIMITER_NAMES[other]}, but a "
                         f"{spec.title} file is separated by {spec.delimiter_text()} "
                         f"(expected header {spec.header_text()!r})")
    hint = next((f" (this header matches format {s.name!r})" for s in FORMAT_SPECS.values()
                 if s is not spec and _header_delimiter(s, head.header, DELIMITER_NAMES)), "")
    raise InputError(f"{path}: wrong header for format {spec.name!r}: expected "
                     f"{spec.header_text()!r} ({spec.delimiter_text()}), found "
                     f"{_clip(head.header)!r}{hint}; another layout can be read with --format events "
                     f"--columns ROLE=COLUMN,...")


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _data_delimiter_hint(plan: ReadPlan) -> str:
    """When the header is right but the rows use another separator, say so."""
    if plan.container != "csv":
        return ""
    row = _peek(plan.path, None).first_row
    if not row or plan.delimiter in row:
        return ""
    for d, name in DELIMITER_NAMES.items():
        if len(row.split(d)) == len(plan.header):
            return f"; the data rows seem to be separated by {name}, not {DELIMITER_NAMES[plan.delimiter]}"
    return ""


def _event_hint(plan: ReadPlan, acc: "_Accumulator") -> str:
    if not acc.unknown_events or plan.event_column is None:
        return ""
    found = ", ".join(map(repr, acc.unknown_events))
    if plan.format != DataFormat.EVENTS:
        return f"; the event column holds {found}"
    pairs = ",".join(f"{v}={t}" for v, t in zip(acc.unknown_events, values(EventType)))
    return (f"; the event column {plan.event_column!r} holds {found}: map them to "
            f"{', '.join(values(EventType))} with --event-map {pairs}")


def _stream(path: Path, compression: str | None) -> pa.NativeFile:
    # explicit compression: pyarrow would otherwise guess it from the file extension
    return pa.input_stream(str(path), compression=compression)


# ---- reading -------------------------------------------------------------------------------------

class _Accumulator:
    """The valid rows of every batch (typed output columns) and the bad rows per reason."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {"key": [], "item": [], "timestamp": [], "event": []}
        self.rows_read = 0
        self.rows_valid = 0
        self.counts = np.zeros(len(REASONS), dtype=np.int64)
        self.first: list[list[int]] = [[] for _ in REASONS]
        self.unknown_events: list[str] = []
        self.labels = False          # the key column holds text
        self.reported_at = time.monotonic()

    def add_bad(self, reason_codes: np.ndarray, numbers: np.ndarray) -> None:
        """Rows of a batch by reason code (0 = valid, else 1 + index into REASONS), their numbers."""
        counts = np.bincount(reason_codes, minlength=len(REASONS) + 1)[1:]
        self.counts += counts
        for i in np.flatnonzero(counts):
            if len(self.first[i]) < MAX_FIRST_LINES:
                self.first[i] += numbers[reason_codes == i + 1][:MAX_FIRST_LINES].tolist()

    def add_field_count_lines(self, lines: np.ndarray) -> None:
        i = REASONS.index("missing_field")
        self.counts[i] += len(lines)
        self.first[i] += lines[:MAX_FIRST_LINES].tolist()

    def bad_row_stats(self) -> dict:
        """{reason: {"count", "first_lines"}} for reasons that occurred, in REASONS order."""
        return {name: {"count": int(self.counts[i]), "first_lines": sorted(self.first[i])[:MAX_FIRST_LINES]}
                for i, name in enumerate(REASONS) if self.counts[i]}

    def table(self, plan: ReadPlan) -> pa.Table:
        c = self.cols
        if self.labels:    # text sessions or users: numbered in order of first appearance
            keys = pa.chunked_array(c["key"], pa.string())
            key = pc.index_in(keys, value_set=pc.unique(keys)).cast(pa.int64()).to_numpy() if len(keys) else \
                np.zeros(0, np.int64)
        else:
            key = _concat(c["key"], np.int64)
        return pa.table({
            plan.key: pa.array(key, pa.int64()),
            "item": pa.array(_concat(c["item"], np.int64), pa.int64()),
            "timestamp": pa.array(_concat(c["timestamp"], np.int64), pa.int64()),
            "event": pa.array(_concat(c["event"], np.int8), pa.int8()),
        })


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _read(plan: ReadPlan, rep: StageReporter) -> _Accumulator:
    if plan.container == "csv":
        _resolve_from_sample(plan, _csv_sample(plan))
        acc = _read_csv_fast(plan, rep)
        return acc if acc is not None else _read_csv_checked(plan, rep)
    batches = _parquet_batches(plan) if plan.container == "parquet" else _jsonl_batches(plan)
    acc, first, row = _Accumulator(), True, 1
    for batch in batches:
        if first:
            _resolve_from_sample(plan, batch)
            first = False
        cols = {c: batch.column(c) for c in plan.kinds}
        numbers = np.arange(row, row + batch.num_rows, dtype=np.int64)
        _check_batch(plan, cols, numbers, acc, skip_blank=False)
        row += batch.num_rows
        _report(rep, acc)
    return acc


def _report(rep: StageReporter, acc: _Accumulator) -> None:
    """Rows read so far, at most once a second."""
    now = time.monotonic()
    if now - acc.reported_at >= 1.0:
        acc.reported_at = now
        rep(acc.rows_read, None, f"{acc.rows_read:,} rows")


# ---- automatic kinds (events format) --------------------------------------------------------------

def _csv_sample(plan: ReadPlan) -> pa.RecordBatch | None:
    """The first rows of a CSV file as text (for the kinds the events format decides from values)."""
    if KEY_AUTO not in plan.kinds.values() and TIME_AUTO not in plan.kinds.values():
        return None
    try:
        reader = pacsv.open_csv(
            _stream(plan.path, plan.compression),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(plan.header), encoding="latin-1",
                                           block_size=SAMPLE_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=plan.delimiter, invalid_row_handler=lambda row: "skip"),
            convert_options=pacsv.ConvertOptions(include_columns=list(plan.kinds),
                                                 column_types={c: pa.string() for c in plan.kinds}))
        return reader.read_next_batch()
    except StopIteration:
        return None
    except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
        raise InputError(f"{plan.path}: cannot read it as a CSV file: {e}") from None


def _resolve_from_sample(plan: ReadPlan, sample: pa.RecordBatch | None) -> None:
    """Fix the events format's automatic kinds from the first values: a session/user column is ids
    when (99% of) its values are whole numbers (the others are then bad rows), else labels; a time column is an epoch in the unit its
    magnitude says, ISO-8601 text, or a native timestamp/date."""
    for column, kind in list(plan.kinds.items()):
        if kind not in (KEY_AUTO, TIME_AUTO):
            continue
        arr = as_plain(sample.column(column)) if sample is not None and sample.num_rows else pa.array([], pa.string())
        if kind == KEY_AUTO:
            numeric = pa.types.is_integer(arr.type) or (is_text(arr.type) and text_looks_whole(arr))
            plan.kinds[column] = ID if numeric else LABEL
            continue
        t = arr.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            resolved, how = ISO, f"native {t}"
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or (is_text(t) and text_looks_numeric(arr)):
            p = parse_column(EPOCH_MS, arr)          # ms at 1 ms per unit: the numbers as they are
            resolved = epoch_unit(p.values[~p.missing & ~p.bad].astype(np.float64))
            how = f"epoch {_UNIT_NAMES[resolved]} (detected from the values' magnitude)"
        else:
            resolved, how = ISO, "ISO-8601 text (detected)"
        plan.kinds[column] = resolved
        plan.time_note.update({"read_as": how, "detected": True})
    for column, kind in plan.kinds.items():
        if kind in TIME_KINDS and "read_as" not in plan.time_note and plan.format == DataFormat.EVENTS:
            plan.time_note.update({"read_as": _UNIT_NAMES.get(kind, kind), "detected": False})


_UNIT_NAMES = {SECONDS: "seconds", MS: "milliseconds", EPOCH_MS: "milliseconds", "epoch_us": "microseconds",
               "epoch_ns": "nanoseconds", ISO: "ISO-8601 text"}


# ---- checking a batch (every path) ---------------------------------------------------------------

def _check_batch(plan: ReadPlan, cols: dict[str, Any], numbers: np.ndarray, acc: _Accumulator,
                 skip_blank: bool, strict: bool = False) -> bool:
    """Parse and check one batch; keep its valid rows in `acc`. `skip_blank`: rows with every field
    empty are blank lines, not rows (CSV). `strict` (the CSV fast path): a batch with any bad row is
    not added and False is returned (the file is then read again by the checked path)."""
    parsed: dict[str, Parsed] = {c: parse_column(k, cols[c], plan.events) for c, k in plan.kinds.items()}
    n = len(numbers)
    reason = np.zeros(n, dtype=np.int8)           # 0 = valid, else 1 + index into REASONS

    def flag(mask: np.ndarray, name: str) -> None:
        np.copyto(reason, REASONS.index(name) + 1, where=(reason == 0) & mask)

    for p in parsed.values():
        flag(p.missing, "missing_field")
    for name in REASONS[1:]:                      # checks in reason order: each row gets its first reason
        for c, kind in plan.kinds.items():
            if _REASON_OF_KIND[kind] == name:
                flag(parsed[c].bad, name)
        if name == "bad_timestamp":
            ts = _timestamps(plan, parsed, reason == 0)
            flag(ts < 0, "bad_timestamp")
    if strict and reason.any():
        return False
    keep = np.ones(n, dtype=bool)
    if skip_blank:       # a line with no values at all is blank (also ",,,,": the two cannot be told apart)
        keep = ~np.logical_and.reduce([p.missing for p in parsed.values()])
    acc.rows_read += int(keep.sum())
    acc.add_bad(reason[keep], numbers[keep])
    valid = reason == 0
    ev = plan.event_column
    if ev is not None and len(acc.unknown_events) < MAX_FIRST_LINES:
        unknown = (reason == REASONS.index("unknown_event") + 1)
        if unknown.any():
            raw = pc.ascii_trim_whitespace(as_plain(cols[ev]).cast(pa.string())).filter(pa.array(unknown))
            for v in pc.unique(raw).to_pylist():
                if v not in acc.unknown_events and len(acc.unknown_events) < MAX_FIRST_LINES:
                    acc.unknown_events.append(v)
    acc.rows_valid += int(valid.sum())
    key = parsed[plan.key_column]
    if plan.kinds[plan.key_column] == LABEL:
        acc.labels = True
        acc.cols["key"].append(key.values.filter(pa.array(valid)))
    else:
        acc.cols["key"].append(key.values[valid])
    acc.cols["item"].append(parsed[plan.item_column].values[valid])
    acc.cols["timestamp"].append(ts[valid])
    acc.cols["event"].append(parsed[ev].values[valid] if ev else np.zeros(int(valid.sum()), np.int8))
    return True


def _timestamps(plan: ReadPlan, parsed: dict[str, Parsed], rows: np.ndarray) -> np.ndarray:
    """ms since the epoch from the time columns (a date counts whole days; the others are ms), 0 on
    rows not in `rows` (which already have a reason)."""
    ts = np.zeros(len(rows), dtype=np.int64)
    for c in plan.time_columns:
        v = np.where(rows, parsed[c].values, 0)
        ts += v * MS_PER_DAY if plan.kinds[c] == DATE else v
    return ts


# ---- CSV -----------------------------------------------------------------------------------------

def _read_csv_fast(plan: ReadPlan, rep: StageReporter) -> _Accumulator | None:
    """Typed, multithreaded, streamed; None when anything is off (the checked path then finds what)."""
    acc = _Accumulator()
    try:
        reader = pacsv.open_csv(
            _stream(plan.path, plan.compression),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(plan.header), block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(delimiter=plan.delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(plan.kinds),
                column_types={c: _FAST_TYPE[k] for c, k in plan.kinds.items()},
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))
        row = 0
        for batch in reader:
            cols = {c: batch.column(c) for c in plan.kinds}
            if not _check_batch(plan, cols, np.arange(row, row + batch.num_rows) + 2, acc, skip_blank=False,
                                strict=True):
                return None
            row += batch.num_rows
            _report(rep, acc)
    except (pa.ArrowException, OSError, EOFError, zlib.error):
        return None
    return acc


def _read_csv_checked(plan: ReadPlan, rep: StageReporter) -> _Accumulator:
    """Read every column as text on one thread (so each row's line number is known), check every
    batch, skip bad rows and count them per reason with their first line numbers.

    Decoded as Latin-1, which maps every byte to a character: every field the presets read is ASCII,
    so a byte that is not valid UTF-8 (or any non-ASCII byte) fails its field's check and costs its
    row, never the file (pyarrow's UTF-8 check refused the whole file, even in its handler of
    malformed rows); an events log's text labels keep their bytes. A line longer than a block is
    read with blocks that fit it.
    """
    block_size, retried = BLOCK_SIZE, False
    while True:
        try:
            return _read_csv_strings(plan, rep, block_size)
        except pa.ArrowInvalid as e:
            # "straddling object straddles two block boundaries": a line longer than a block
            if "straddl" not in str(e) or retried:
                raise InputError(f"{plan.path}: cannot read it as a {plan.title} file: {e}") from None
            block_size, retried = _block_for_longest_line(plan), True
        except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
            raise InputError(f"{plan.path}: cannot read it as a {plan.title} file: {e}") from None


def _read_csv_strings(plan: ReadPlan, rep: StageReporter, block_size: int) -> _Accumulator:
    acc = _Accumulator()
    skipped = array("q")          # line numbers of rows pyarrow skipped (wrong field count, blank)
    field_count = array("q")      # ... of those, the non-blank ones (bad rows)

    def on_invalid_row(row) -> str:  # called once per skipped row only
        skipped.append(row.number)
        if row.text.strip():
            field_count.append(row.number)
        return "skip"

    reader = pacsv.open_csv(
        _stream(plan.path, plan.compression),
        read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(plan.header), encoding="latin-1",
                                       block_size=block_size, use_threads=False),
        # keep blank lines as rows so every physical line is either a row or a skipped line
        parse_options=pacsv.ParseOptions(delimiter=plan.delimiter, ignore_empty_lines=False,
                                         invalid_row_handler=on_invalid_row),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(plan.kinds), column_types={c: pa.string() for c in plan.kinds},
            strings_can_be_null=False, quoted_strings_can_be_null=False))
    next_line, used = 2, 0          # the first line not yet placed; skipped lines placed so far
    for batch in reader:
        n = batch.num_rows
        # this batch's rows and the lines skipped among them fill lines next_line .. next_line + n + s - 1
        # a skipped line s_i (the i-th not yet placed) is among them when fewer than n table rows
        # come before it: s_i - next_line - i < n (non-decreasing in i); later ones (a block read
        # ahead) wait for their own batch
        sk = np.frombuffer(skipped, dtype=np.int64)[used:]
        inside = sk[(sk - next_line - np.arange(len(sk))) < n] - next_line
        in_table = np.ones(n + len(inside), dtype=bool)
        in_table[inside] = False
        lines = next_line + np.flatnonzero(in_table)
        used += len(inside)
        next_line += len(inside) + n
        _check_batch(plan, {c: batch.column(c) for c in plan.kinds}, lines[:n], acc, skip_blank=True)
        _report(rep, acc)
    acc.rows_read += len(field_count)
    acc.add_field_count_lines(np.frombuffer(field_count, dtype=np.int64))
    return acc


def _block_for_longest_line(plan: ReadPlan) -> int:
    """A block size that holds the file's longest line (after Latin-1 to UTF-8, which at most doubles
    it); InputError naming the line when no block could."""
    longest, line_no, line, carry = 0, 0, 1, 0       # carry: length of the line open at a chunk's end
    with _stream(plan.path, plan.compression) as f:
        while chunk := f.read(16 << 20):
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            lengths = np.diff(ends, prepend=-1) - 1         # line lengths without their newline
            if len(ends):
                lengths[0] += carry
                i = int(np.argmax(lengths))
                if lengths[i] > longest:
                    longest, line_no = int(lengths[i]), line + i
                line += len(ends)
                carry = len(chunk) - int(ends[-1]) - 1
            else:
                carry += len(chunk)
            if carry > longest:
                longest, line_no = carry, line
    if 2 * longest + 2 > MAX_BLOCK_SIZE:
        raise InputError(f"{plan.path}: line {line_no:,} is {longest:,} bytes long, longer than sessrec reads "
                         f"({MAX_BLOCK_SIZE // 2:,}); a row of a {plan.title} is a few dozen bytes: the file "
                         f"is damaged or is not a click log")
    return max(BLOCK_SIZE, 2 * longest + 2)


# ---- Parquet and JSON Lines ----------------------------------------------------------------------

def _parquet_batches(plan: ReadPlan) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq
    try:
        f = pq.ParquetFile(plan.path)
        yield from f.iter_batches(batch_size=BATCH_ROWS, columns=list(plan.kinds))
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{plan.path}: cannot read it as Parquet: {e}") from None


def _jsonl_batches(plan: ReadPlan, names_only: bool = False) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pj
    row = 1
    try:
        reader = pj.open_json(_stream(plan.path, plan.compression),
                              read_options=pj.ReadOptions(block_size=BLOCK_SIZE))
        for batch in reader:
            yield batch if names_only else batch.select([c for c in plan.kinds])
            if names_only:
                return
            row += batch.num_rows
    except KeyError as e:
        raise InputError(f"{plan.path}: no field {e} in the JSON records near row {row:,} (--columns)") from None
    except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
        raise InputError(f"{plan.path}: cannot read it as JSON Lines (one JSON object per line, the same "
                         f"type in each field) near row {row:,}: {e}") from None


def _describe_bad(bad_rows: dict, numbered_by: str = "line") -> str:
    return "; ".join(f"{name}: {d['count']:,}, first at {numbered_by}(s) {', '.join(map(str, d['first_lines']))}"
                     for name, d in bad_rows.items())

