"""The values of a click log's columns, parsed and checked by kind, vectorised (no per-row Python).

One function per direction: `parse_column(kind, array)` takes a column of one record batch, as text
(a CSV read as strings, a text column of a Parquet or JSON Lines file) or typed (integers, floats,
timestamps, dates), and returns its values with two masks, `missing` (null or empty) and `bad`
(present but not a value of the kind). The reader (`engine.data.formats`) turns the masks into
skipped rows counted per reason; every path of it goes through here, so a value is accepted or not
whatever the file type and whatever else is in its batch.

Kinds (`engine.data.format_specs`): ids (whole numbers 0 .. 2**63 - 1, leading zeros allowed),
labels (any non-empty text, a session or user column that is not numeric), times (epoch ms /
seconds / microseconds / nanoseconds, a date plus a millisecond offset, ISO-8601 text), event types.
Times come out as int64 ms since the epoch (UTC), rounded to the millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.core.schema import EventType, values as vocabulary
from engine.data.format_specs import (
    DATE,
    EPOCH_MS,
    EPOCH_NS,
    EPOCH_UNITS,
    EPOCH_US,
    EVENT,
    ID,
    ISO,
    LABEL,
    MS,
    OFFSET_MS,
    SECONDS,
)

_FLOAT_RE = r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# ISO-8601 as sessrec reads it: a date, optionally a time (hh, hh:mm or hh:mm:ss, up to 9 decimals)
# after 'T' or a space, optionally a zone (Z, +hh, +hhmm, +hh:mm) after the time; no zone is UTC
ISO_RE = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
          r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$")
ISO_TEXT = "ISO-8601 like 2015-05-03T03:00:00[.123][Z|+02:00] (no zone: UTC)"
_ZONE_RE = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_MAX_MS = 9.2e18           # a time in ms must fit int64
INT64_MAX_TEXT = str(2 ** 63 - 1)
_INT64_DIGITS = len(INT64_MAX_TEXT)        # 19
MS_PER_DAY = 86_400_000
# ms per unit of each epoch kind (seconds: the RSC15 kind, text that may have decimals)
_MS_PER_UNIT = {SECONDS: 1000.0, EPOCH_MS: 1.0, EPOCH_US: 1e-3, EPOCH_NS: 1e-6}


@dataclass
class Parsed:
    values: np.ndarray | pa.Array   # int64 (ids, times), int8 (event codes), or text (labels)
    missing: np.ndarray             # bool: null, or empty text
    bad: np.ndarray                 # bool: present, but not a value of the kind


@dataclass(frozen=True)
class EventLookup:
    """Raw event values -> codes into EVENT_TYPES (a value not in `raw` is an unknown event)."""

    raw: tuple[str, ...]
    codes: tuple[int, ...]

    def codes_of(self, text: pa.Array) -> np.ndarray:
        """int8 codes, -1 for a value that is not one of `raw`."""
        pos = pc.fill_null(pc.index_in(text, value_set=pa.array(self.raw, pa.string())), -1).to_numpy()
        table = np.array([*self.codes, -1], dtype=np.int8)
        return table[np.where(pos < 0, len(self.codes), pos)]


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def as_plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array; dictionary-encoded columns (common in Parquet) decoded."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def parse_column(kind: str, arr: pa.Array, events: EventLookup | None = None) -> Parsed:
    """Values of one column of `kind` (see the module docstring)."""
    arr = as_plain(arr)
    if is_text(arr.type) or pa.types.is_null(arr.type):
        return _parse_text(kind, arr.cast(pa.string()), events)
    return _parse_typed(kind, arr, events)


# ---- text --------------------------------------------------------------------------------------
def _parse_text(kind: str, raw: pa.Array, events: EventLookup | None) -> Parsed:
    s = pc.ascii_trim_whitespace(raw)
    missing = pc.fill_null(pc.equal(pc.utf8_length(s), 0), True).to_numpy(zero_copy_only=False)
    s = pc.fill_null(s, "")
    if kind == LABEL:
        return Parsed(s, missing, np.zeros(len(s), dtype=bool))
    if kind == EVENT:
        codes = (events or DEFAULT_EVENTS).codes_of(s)
        return Parsed(codes, missing, (codes < 0) & ~missing)
    if kind in (ID, MS, OFFSET_MS):
        values, ok = parse_whole(s)
    elif kind == DATE:
        values, ok = _parse_dates(s)
    elif kind == ISO:
        values, ok = parse_iso(s)
    else:                                  # seconds and the epoch units: decimal text
        ok = pc.match_substring_regex(s, _FLOAT_RE).to_numpy(zero_copy_only=False)
        v = pc.if_else(pa.array(ok), s, "0").cast(pa.float64()).to_numpy()
        values, in_range = _epoch_ms(v * _MS_PER_UNIT[kind])
        ok &= in_range
    return Parsed(values, missing, ~ok & ~missing)


def parse_whole(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Whole numbers 0 .. 2**63 - 1 as text (ASCII digits only, no sign, leading zeros allowed):
    (int64 values, 0 where not; ok mask). Without the zeros a value fits if it has at most 18
    digits, or 19 that sort at or below INT64_MAX's; a plain character-class test is several times
    faster than the equivalent regex."""
    ok = pc.ascii_is_decimal(s)
    s = pc.utf8_ltrim(s, characters="0")
    n = pc.utf8_length(s)
    fits = pc.or_(pc.less_equal(n, _INT64_DIGITS - 1),
                  pc.and_(pc.equal(n, _INT64_DIGITS), pc.less_equal(s, INT64_MAX_TEXT)))
    ok = pc.fill_null(pc.and_(ok, fits), False)
    s = pc.if_else(pc.equal(n, 0), "0", s)          # "000" is 0
    values = pc.if_else(ok, s, "0").cast(pa.int64()).to_numpy()
    return values, ok.to_numpy(zero_copy_only=False)


def _parse_dates(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """YYYY-MM-DD -> (days since the epoch, ok); an impossible day (2016-02-30) is not ok."""
    ok = pc.match_substring_regex(s, _DATE_RE).to_numpy(zero_copy_only=False)
    y, m, d = (_digits(s, a, b, ok) for a, b in ((0, 4), (5, 7), (8, 10)))
    days, valid = _civil_days(y, m, d)
    return np.where(ok & valid, days, 0), ok & valid


def _digits(s: pa.Array, start: int, stop: int, ok: np.ndarray) -> np.ndarray:
    """int64 of characters [start, stop) of each string where `ok` (0 elsewhere)."""
    part = pc.utf8_slice_codeunits(s, start, stop)
    part = pc.if_else(pa.array(ok & pc.ascii_is_decimal(part).to_numpy(zero_copy_only=False)), part, "0")
    return part.cast(pa.int64()).to_numpy()


def _civil_days(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days since 1970-01-01 of proleptic Gregorian dates (Howard Hinnant's days_from_civil), and
    whether each (y, m, d) is a real day."""
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    valid = (m >= 1) & (m <= 12) & (d >= 1)
    mi = np.clip(m, 1, 12) - 1
    valid &= d <= month_days[mi] + ((mi == 1) & leap)
    yy = y - (m <= 2)
    era = np.floor_divide(yy, 400)
    yoe = yy - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468, valid


def parse_iso(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ISO-8601 text (`ISO_RE`) -> (ms since the epoch, UTC; ok). The grammar decides what is
    valid; arrow's parser converts the valid strings of a batch when it takes them all, else they
    are converted from their parts here (both give the same ms: tests check it)."""
    ok = pc.fill_null(pc.match_substring_regex(s, ISO_RE), False).to_numpy(zero_copy_only=False)
    filled = pc.if_else(pa.array(ok), s, "1970-01-01")
    zoned = pc.match_substring_regex(filled, _ZONE_RE).to_numpy(zero_copy_only=False)
    try:
        out = np.zeros(len(s), dtype=np.int64)
        for mask, tz in ((zoned, "UTC"), (~zoned, None)):
            if mask.any():
                part = filled.filter(pa.array(mask)) if not mask.all() else filled
                ns = part.cast(pa.timestamp("ns", tz=tz)).cast(pa.int64()).to_numpy()
                out[mask] = np.floor_divide(ns, 1_000_000)
        return np.where(ok, out, 0), ok
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _iso_from_parts(filled, ok)


def _iso_from_parts(s: pa.Array, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The slow, exact way: the date, time, fraction and zone of each string, checked (month 13,
    February 30, hour 24, minute or second 60 are not ok) and added up."""
    n = pc.utf8_length(s).to_numpy()
    y, mo, d = (_digits(s, a, b, ok) for a, b in ((0, 4), (5, 7), (8, 10)))
    days, valid = _civil_days(y, mo, d)
    has_t = ok & (n >= 13)
    hh = _digits(s, 11, 13, has_t)
    has_m = has_t & (pc.utf8_slice_codeunits(s, 13, 14).to_numpy(zero_copy_only=False) == ":")
    mm = _digits(s, 14, 16, has_m)
    has_s = has_m & (pc.utf8_slice_codeunits(s, 16, 17).to_numpy(zero_copy_only=False) == ":")
    ss = _digits(s, 17, 19, has_s)
    valid &= (hh <= 23) & (mm <= 59) & (ss <= 59)
    # the fraction: its first 3 digits are the ms (".5" is 500 ms; digits past ms are cut)
    frac = pc.extract_regex(s, r"^[^.]*\.(?P<f>[0-9]{1,9})")
    f = pc.fill_null(pc.struct_field(frac, [0]), "")
    f3 = pc.utf8_rpad(pc.utf8_slice_codeunits(f, 0, 3), 3, "0")
    ms = pc.if_else(pc.equal(pc.utf8_length(f), 0), "0", f3).cast(pa.int64()).to_numpy()
    zone = pc.extract_regex(s, r"(?P<sign>[+-])(?P<h>[0-9]{2}):?(?P<m>[0-9]{2})?$")
    has_zone = ok & has_t & pc.is_valid(zone).to_numpy(zero_copy_only=False)
    sign = np.where(pc.fill_null(pc.struct_field(zone, [0]), "+").to_numpy(zero_copy_only=False) == "-", -1, 1)
    zh = pc.fill_null(pc.struct_field(zone, [1]), "0").cast(pa.int64()).to_numpy()
    zm = pc.fill_null(pc.if_else(pc.equal(pc.utf8_length(pc.fill_null(pc.struct_field(zone, [2]), "")), 0),
                                 "0", pc.struct_field(zone, [2])), "0").cast(pa.int64()).to_numpy()
    valid &= ~has_zone | ((zh <= 23) & (zm <= 59))
    offset_min = np.where(has_zone, sign * (zh * 60 + zm), 0)
    total = (days * 86_400 + hh * 3600 + mm * 60 + ss - offset_min * 60) * 1000 + ms
    good = ok & valid
    return np.where(good, total, 0), good


def _epoch_ms(ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float ms -> (int64 ms rounded to nearest, finite, >= 0 and inside int64)."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ms) & (ms >= 0) & (ms < _MAX_MS)
        return np.where(ok, np.rint(np.where(ok, ms, 0.0)), 0).astype(np.int64), ok


# ---- typed (Parquet, JSON Lines; the CSV reader's fast path) ------------------------------------
def _parse_typed(kind: str, arr: pa.Array, events: EventLookup | None) -> Parsed:
    t = arr.type
    missing = arr.is_null().to_numpy(zero_copy_only=False)
    n = len(arr)
    if kind in (EVENT, LABEL):
        text = arr.cast(pa.string())
        if kind == LABEL:
            return Parsed(pc.fill_null(text, ""), missing, np.zeros(n, dtype=bool))
        codes = (events or DEFAULT_EVENTS).codes_of(text)
        return Parsed(codes, missing, (codes < 0) & ~missing)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if kind in (ID, OFFSET_MS):
            return Parsed(np.zeros(n, np.int64), missing, ~missing)
        ms = (arr.cast(pa.timestamp("ms", tz=t.tz)) if pa.types.is_timestamp(t)
              else arr.cast(pa.date32()).cast(pa.int32()))
        v = pc.fill_null(ms.cast(pa.int64()), 0).to_numpy()
        if pa.types.is_date(t):
            v = v * (1 if kind == DATE else MS_PER_DAY)
        return Parsed(v, missing, (v < 0) & ~missing)
    if pa.types.is_integer(t):
        if pa.types.is_unsigned_integer(t):
            too_big = pc.fill_null(pc.greater(arr, pa.scalar(2 ** 63 - 1, t)), False).to_numpy(zero_copy_only=False) \
                if t.bit_width == 64 else np.zeros(n, dtype=bool)
            arr = pc.if_else(pa.array(too_big), pa.scalar(0, t), arr)
        else:
            too_big = np.zeros(n, dtype=bool)
        v = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy()
        if kind in (SECONDS, *EPOCH_UNITS) and kind != EPOCH_MS:
            if kind in (EPOCH_US, EPOCH_NS):      # integer division, rounded to the nearest ms
                per = 1000 if kind == EPOCH_US else 1_000_000
                v = np.floor_divide(v + per // 2, per)
                return Parsed(v, missing, ((v < 0) | too_big) & ~missing)
            with np.errstate(over="ignore"):
                ok = (v >= 0) & (v < _MAX_MS / 1000)
                v = np.where(ok, v, 0) * 1000
            return Parsed(v, missing, (~ok | too_big) & ~missing)
        if kind == DATE:
            return Parsed(v, missing, ~missing)       # a date column holds dates
        return Parsed(v, missing, ((v < 0) | too_big) & ~missing)
    if pa.types.is_floating(t):
        f = pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy()
        if kind == ID:
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(f) & (f >= 0) & (f == np.floor(f)) & (f < 2.0 ** 63)
            return Parsed(np.where(ok, f, 0).astype(np.int64), missing, ~ok & ~missing)
        if kind == DATE:
            return Parsed(np.zeros(n, np.int64), missing, ~missing)
        v, ok = _epoch_ms(f * _MS_PER_UNIT.get(kind, 1.0))
        return Parsed(v, missing, ~ok & ~missing)
    # booleans, lists, structs, binary: no value of any kind
    return Parsed(np.zeros(n, np.int64), missing, ~missing)


def text_looks_numeric(s: pa.Array) -> bool:
    """Whether every non-empty value of a text sample is a decimal number (a numeric time or id
    column stored as text)."""
    s = pc.ascii_trim_whitespace(pc.fill_null(as_plain(s).cast(pa.string()), ""))
    present = pc.greater(pc.utf8_length(s), 0)
    numeric = pc.match_substring_regex(s, _FLOAT_RE)
    return bool(pc.all(pc.or_(pc.invert(present), numeric)).as_py()) and bool(pc.any(present).as_py())


def text_looks_whole(s: pa.Array, share: float = 0.99) -> bool:
    """Whether (at least `share` of) the non-empty values of a text sample are whole numbers in the
    id range: then a session or user column holds ids, and the few others are bad rows."""
    s = pc.ascii_trim_whitespace(pc.fill_null(as_plain(s).cast(pa.string()), ""))
    present = pc.greater(pc.utf8_length(s), 0).to_numpy(zero_copy_only=False)
    _, ok = parse_whole(s)
    return bool(present.any()) and float(ok[present].mean()) >= share


def epoch_unit(values: np.ndarray) -> str:
    """The epoch unit of numeric times from their magnitude (the median of the sample): below 1e11
    seconds (1e11 s is the year 5138; 1e11 ms is 1973), below 1e14 ms, below 1e17 us, else ns."""
    v = values[np.isfinite(values) & (values > 0)]
    if not len(v):
        return SECONDS
    med = float(np.median(v))
    return SECONDS if med < 1e11 else EPOCH_MS if med < 1e14 else EPOCH_US if med < 1e17 else EPOCH_NS


DEFAULT_EVENTS = EventLookup(vocabulary(EventType), tuple(range(len(EventType))))
