"""Readers for raw click logs (RetailRocket, YooChoose/RSC15, Diginetica) into one canonical events table.

Every format ends up as the same four columns, in this order:

    <key> int64     "visitor" (retailrocket) or "session_key" (rsc15, diginetica)
    item int64      raw item id
    timestamp int64 ms since the epoch (UTC)
    event int8      code into engine.data.sessions.EVENT_TYPES

Reading has two paths. The fast path parses typed columns with pyarrow's multithreaded CSV reader and
checks the whole arrays at once; a clean file never leaves it. If it fails (a value that does not
parse, a row with the wrong number of fields) or finds a bad value, the file is read again with every
column as a string on one thread, so that each row's line number is known; the strings are validated
with vectorised regexes and casts, and bad rows are skipped and counted per reason.

Rows are kept in file order; sessionize sorts. Blank lines are ignored (not counted as bad rows).
"""

from __future__ import annotations

import gzip
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.core.schema import DataFormat
from engine.data.format_specs import (
    DATE,
    DELIMITER_NAMES,
    EVENT,
    FORMAT_SPECS,
    ID,
    MS,
    OFFSET_MS,
    REASONS,
    SECONDS,
    FormatSpec,
    require_regular_file,
    spec_file_text,
)
from engine.data.sessions import EVENT_TYPES

MAX_FIRST_LINES = 5
BLOCK_SIZE = 4 << 20  # 4 MiB blocks: fewer, larger chunks parse faster than the 1 MiB default
MAX_BLOCK_SIZE = 1 << 30  # the longest line read (twice it, after Latin-1 -> UTF-8): pyarrow's limit is 2 GiB

_REASON_OF_KIND = {ID: "non_numeric_id", MS: "bad_timestamp", OFFSET_MS: "bad_timestamp",
                   SECONDS: "bad_timestamp", DATE: "bad_timestamp", EVENT: "unknown_event"}
_FAST_TYPE = {ID: pa.int64(), MS: pa.int64(), OFFSET_MS: pa.int64(), SECONDS: pa.float64(),
              DATE: pa.date32(), EVENT: pa.string()}
_FLOAT_RE = r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_MAX_SECONDS = 9.2e15  # seconds * 1000 must fit int64
_INT64_MAX_TEXT = str(2 ** 63 - 1)
_INT64_DIGITS = len(_INT64_MAX_TEXT)      # 19
_MS_PER_DAY = 86_400_000
_EVENT_VALUES = pa.array(EVENT_TYPES, pa.string())


@dataclass
class ReadResult:
    table: pa.Table   # canonical events: <key>, item, timestamp, event (see module docstring)
    key: str          # "visitor" or "session_key"
    stats: dict       # path, format, compression, rows_read, rows_valid, bad_rows


# ---- public API --------------------------------------------------------------------------------

def read_events(path: str | Path, fmt: str, progress: ProgressFn | None = None) -> ReadResult:
    """Read a raw log of format `fmt` (plain or gzip) into the canonical events table."""
    path = Path(path)
    spec = _spec(fmt, path)
    head = _peek(path, spec)
    delimiter = _check_header(path, spec, head)
    rep = StageReporter("ingest", progress, unit="rows")
    rep(0, None, f"reading {path.name}")

    parsed = _read_fast(path, head.compression, spec, delimiter)
    if parsed is None:
        parsed = _read_checked(path, head.compression, spec, delimiter)
    values, rows_read, bad_rows = parsed
    rows_valid = len(values[spec.item_column])
    rep(rows_read, rows_read, f"read {rows_read:,} rows")

    n_bad = rows_read - rows_valid
    if rows_read == 0:
        raise InputError(f"{path}: no data rows after the header; expected {spec.title} rows "
                         f"like {spec.example!r}")
    if rows_valid == 0:
        raise InputError(f"{path}: no valid rows: all {n_bad:,} data rows are bad "
                         f"({_describe_bad(bad_rows)}); expected {spec.title} rows like "
                         f"{spec.example!r}{_data_delimiter_hint(spec, delimiter, head.first_row)}")

    table = _assemble(spec, values)
    stats = {"path": str(path), "format": spec.name, "compression": head.compression or "none",
             "rows_read": int(rows_read), "rows_valid": int(rows_valid), "bad_rows": bad_rows}
    rep(rows_read, rows_read, f"{rows_valid:,} valid rows, {n_bad:,} bad")
    return ReadResult(table=table, key=spec.key, stats=stats)


def detect_format(path: str | Path) -> str:
    """Name of the format whose header the file starts with; InputError if none matches.

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
                     f"expected one of {expected}")


# ---- file head: existence, compression, header ---------------------------------------------------

@dataclass(frozen=True)
class _Head:
    compression: str | None   # "gzip" or None
    header: str               # first line, without BOM and line end
    first_row: str            # second line (first data row), "" if none


def _spec(fmt: str, path: Path) -> FormatSpec:
    spec = FORMAT_SPECS.get(fmt)
    if spec is None and fmt == DataFormat.SRGNN:
        raise InputError(f"{path}: format srgnn is a folder of pickles, not a log file; read it with "
                         f"engine.data.srgnn.read_srgnn")
    if spec is None:
        raise InputError(f"{path}: unknown format {fmt!r}; valid formats: {', '.join(FORMAT_SPECS)}")
    return spec


def _peek(path: Path, spec: FormatSpec | None) -> _Head:
    """Check the file exists and is not empty; find its compression, header line and first row."""
    what = spec_file_text(spec.name) if spec else "a click log"
    require_regular_file(path, what)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        compression, opener = "gzip", gzip.open
    elif magic == b"PK\x03\x04":
        raise InputError(f"{path}: is a zip archive; unzip it and pass the file inside ({what})")
    else:
        compression, opener = None, open
    try:
        with opener(path, "rb") as f:
            header = f.readline(1 << 16)
            first_row = f.readline(1 << 16)
    except (OSError, EOFError, zlib.error) as e:
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
                     f"{_clip(head.header)!r}{hint}")


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _data_delimiter_hint(spec: FormatSpec, delimiter: str, row: str) -> str:
    """When the header is right but the rows use another separator, say so."""
    if not row or delimiter in row:
        return ""
    for d, name in DELIMITER_NAMES.items():
        if len(row.split(d)) == len(spec.header):
            return f"; the data rows seem to be separated by {name}, not {DELIMITER_NAMES[delimiter]}"
    return ""


def _stream(path: Path, compression: str | None) -> pa.NativeFile:
    # explicit compression: pyarrow would otherwise guess it from the file extension
    return pa.input_stream(str(path), compression=compression)


# ---- fast path ---------------------------------------------------------------------------------

_Parsed = tuple[dict[str, np.ndarray], int, dict]  # (typed values of valid rows, rows read, bad rows)


def _read_fast(path: Path, compression: str | None, spec: FormatSpec, delimiter: str) -> _Parsed | None:
    """Typed, multithreaded read; None when anything is off (the checked path then finds what)."""
    try:
        table = pacsv.read_csv(
            _stream(path, compression),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(spec.header),
                                           block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(spec.kinds),
                column_types={c: _FAST_TYPE[k] for c, k in spec.kinds.items()},
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowException, OSError, EOFError, zlib.error):
        return None
    if any(col.null_count for col in table.columns):
        return None
    values = {c: _typed_values(k, table.column(c)) for c, k in spec.kinds.items()}
    if any(_bad_values(spec.kinds[c], v).any() for c, v in values.items()):
        return None
    if (_timestamps(spec, values) < 0).any():
        return None
    return values, table.num_rows, {}


def _typed_values(kind: str, col: pa.ChunkedArray) -> np.ndarray:
    """A typed arrow column as numpy: int64, float64 (seconds), int64 days (date), int8 codes (event,
    -1 for an unknown type)."""
    if kind == DATE:
        return col.cast(pa.int32()).to_numpy().astype(np.int64)
    if kind == EVENT:
        return pc.fill_null(pc.index_in(col, value_set=_EVENT_VALUES), -1).to_numpy().astype(np.int8)
    return col.to_numpy()


def _bad_values(kind: str, v: np.ndarray) -> np.ndarray:
    """Rows whose parsed value is out of range for its kind."""
    if kind == SECONDS:
        return ~np.isfinite(v) | (v < 0) | (v >= _MAX_SECONDS)
    if kind == DATE:
        return np.zeros(len(v), dtype=bool)  # dates before 1970 show up as negative timestamps
    return v < 0


def _timestamps(spec: FormatSpec, values: dict[str, np.ndarray]) -> np.ndarray:
    """ms since the epoch from the time columns (ms; float seconds; date + ms offset)."""
    ts = np.zeros(len(values[spec.item_column]), dtype=np.int64)
    for c in spec.time_columns:
        kind, v = spec.kinds[c], values[c]
        if kind == SECONDS:
            ts += np.rint(v * 1000.0).astype(np.int64)
        elif kind == DATE:
            ts += v * _MS_PER_DAY
        else:
            ts += v
    return ts


def _assemble(spec: FormatSpec, values: dict[str, np.ndarray]) -> pa.Table:
    n = len(values[spec.item_column])
    ev = spec.event_column
    events = values[ev] if ev else np.zeros(n, dtype=np.int8)  # formats without event types are views
    return pa.table({
        spec.key: pa.array(values[spec.key_column], pa.int64()),
        "item": pa.array(values[spec.item_column], pa.int64()),
        "timestamp": pa.array(_timestamps(spec, values), pa.int64()),
        "event": pa.array(events, pa.int8()),
    })


# ---- checked path ------------------------------------------------------------------------------

def _read_checked(path: Path, compression: str | None, spec: FormatSpec, delimiter: str) -> _Parsed:
    """Read every column as a string on one thread (so each row's line number is known), validate
    vectorised, skip bad rows and count them per reason with their first line numbers.

    Decoded as Latin-1, which maps every byte to a character: every field of every format is ASCII,
    so a byte that is not valid UTF-8 (or any non-ASCII byte) fails its field's check and costs its
    row, never the file (pyarrow's UTF-8 check refused the whole file, even in its handler of
    malformed rows). A line longer than a block is read with blocks that fit it.
    """
    block_size, retried = BLOCK_SIZE, False
    while True:
        try:
            table, skipped, field_count_lines = _read_strings(path, compression, spec, delimiter, block_size)
            break
        except pa.ArrowInvalid as e:
            # "straddling object straddles two block boundaries": a line longer than a block
            if "straddl" not in str(e) or retried:
                raise InputError(f"{path}: cannot read it as a {spec.title} file: {e}") from None
            block_size, retried = _block_for_longest_line(path, compression, spec), True
        except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: cannot read it as a {spec.title} file: {e}") from None

    n_lines = table.num_rows + len(skipped)
    in_table = np.ones(n_lines, dtype=bool)
    in_table[np.frombuffer(skipped, dtype=np.int64) - 2] = False
    lines = np.arange(2, n_lines + 2, dtype=np.int64)[in_table]  # line number of each table row

    strings = {c: pc.ascii_trim_whitespace(table.column(c).combine_chunks()) for c in spec.kinds}
    empty = {c: pc.equal(pc.utf8_length(s), 0).to_numpy(zero_copy_only=False)
             for c, s in strings.items()}
    # a line with no values at all is blank (also ",,,,": the two cannot be told apart here)
    blank = np.logical_and.reduce(list(empty.values()))

    reason = np.zeros(table.num_rows, dtype=np.int8)  # 0 = valid, else 1 + index into REASONS

    def flag(mask: np.ndarray, name: str) -> None:
        code = REASONS.index(name) + 1
        np.copyto(reason, code, where=(reason == 0) & mask)

    for c in spec.kinds:
        flag(empty[c], "missing_field")
    values: dict[str, np.ndarray] = {}
    for name in REASONS[1:]:  # checks in reason order, so each row gets its first reason
        for c, kind in spec.kinds.items():
            if _REASON_OF_KIND[kind] == name:
                values[c], bad = _parse_strings(kind, strings[c])
                flag(bad | _bad_values(kind, values[c]), name)
        if name == "bad_timestamp":
            placeholder = {c: np.where(reason == 0, v, 0) for c, v in values.items()}
            flag(_timestamps(spec, placeholder) < 0, "bad_timestamp")

    keep = ~blank
    rows_read = int(keep.sum()) + len(field_count_lines)
    bad_rows = _bad_row_stats(reason[keep], lines[keep],
                              np.frombuffer(field_count_lines, dtype=np.int64))
    valid = reason == 0
    return {c: v[valid] for c, v in values.items()}, rows_read, bad_rows


def _read_strings(path: Path, compression: str | None, spec: FormatSpec, delimiter: str,
                  block_size: int) -> tuple[pa.Table, array, array]:
    """(string columns, line numbers of the rows pyarrow skipped, of those the non-blank ones)."""
    skipped = array("q")     # line numbers of rows pyarrow skipped (wrong field count, blank)
    field_count_lines = array("q")  # ... of those, the non-blank ones (bad rows)

    def on_invalid_row(row) -> str:  # called once per skipped row only
        skipped.append(row.number)
        if row.text.strip():
            field_count_lines.append(row.number)
        return "skip"

    table = pacsv.read_csv(
        _stream(path, compression),
        read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(spec.header), encoding="latin-1",
                                       block_size=block_size, use_threads=False),
        # keep blank lines as rows so every physical line is either a row or a skipped line
        parse_options=pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False,
                                         invalid_row_handler=on_invalid_row),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(spec.kinds), column_types={c: pa.string() for c in spec.kinds},
            strings_can_be_null=False, quoted_strings_can_be_null=False))
    return table, skipped, field_count_lines


def _block_for_longest_line(path: Path, compression: str | None, spec: FormatSpec) -> int:
    """A block size that holds the file's longest line (after Latin-1 to UTF-8, which at most doubles
    it); InputError naming the line when no block could."""
    longest, line_no, line, carry = 0, 0, 1, 0       # carry: length of the line open at a chunk's end
    with _stream(path, compression) as f:
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
        raise InputError(f"{path}: line {line_no:,} is {longest:,} bytes long, longer than sessrec reads "
                         f"({MAX_BLOCK_SIZE // 2:,}); a row of a {spec.title} is a few dozen bytes: the file "
                         f"is damaged or is not a click log")
    return max(BLOCK_SIZE, 2 * longest + 2)


def _parse_strings(kind: str, s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parse trimmed strings of one kind: (values with 0 where unparseable, unparseable mask)."""
    if kind == EVENT:
        codes = _typed_values(EVENT, pa.chunked_array([s]))
        return codes, codes < 0
    if kind in (ID, MS, OFFSET_MS):
        # the fast path's rule exactly (pyarrow's int64 parse, then >= 0): digits only, no sign,
        # leading zeros allowed, a value of at most INT64_MAX. Without the zeros a value fits if it
        # has at most 18 digits, or 19 that sort at or below INT64_MAX's; a plain character-class
        # test is several times faster than the equivalent regex
        ok = pc.ascii_is_decimal(s)
        s = pc.utf8_ltrim(s, characters="0")
        n = pc.utf8_length(s)
        fits = pc.or_(pc.less_equal(n, _INT64_DIGITS - 1),
                      pc.and_(pc.equal(n, _INT64_DIGITS), pc.less_equal(s, _INT64_MAX_TEXT)))
        ok = pc.and_(ok, fits)
        s = pc.if_else(pc.equal(n, 0), "0", s)          # "000" is 0
    else:
        ok = pc.match_substring_regex(s, _FLOAT_RE if kind == SECONDS else _DATE_RE)
    if kind == DATE:
        filled = pc.if_else(ok, s, "1970-01-01")
        parsed = pc.strptime(filled, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls 2016-02-30 over to March: a date is valid only if it prints back the same
        ok = pc.fill_null(pc.and_(ok, pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), filled)), False)
        good = ok.to_numpy(zero_copy_only=False)
        days = pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy() // 86_400
        return np.where(good, days, 0), ~good
    values = pc.if_else(ok, s, "0").cast(pa.float64() if kind == SECONDS else pa.int64()).to_numpy()
    return values, ~ok.to_numpy(zero_copy_only=False)


def _bad_row_stats(reason: np.ndarray, lines: np.ndarray, field_count_lines: np.ndarray) -> dict:
    """{reason: {"count", "first_lines"}} for reasons that occurred, in REASONS order."""
    out: dict = {}
    for code, name in enumerate(REASONS, start=1):
        hit = lines[reason == code]
        if name == "missing_field" and len(field_count_lines):
            hit = np.sort(np.concatenate([hit[:MAX_FIRST_LINES],
                                          field_count_lines[:MAX_FIRST_LINES]]))
            count = int((reason == code).sum()) + len(field_count_lines)
        else:
            count = len(hit)
        if count:
            out[name] = {"count": int(count), "first_lines": [int(x) for x in hit[:MAX_FIRST_LINES]]}
    return out


def _describe_bad(bad_rows: dict) -> str:
    return "; ".join(f"{name}: {d['count']:,}, first at line(s) {', '.join(map(str, d['first_lines']))}"
                     for name, d in bad_rows.items())
