"""The events format: any CSV/TSV, Parquet or JSON Lines log with its columns named, and the presets
(RetailRocket, RSC15, Diginetica) as that same reader with fixed columns."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main as cli
from engine.core.config import DataConfig
from engine.core.errors import InputError
from engine.data.formats import read_events
from engine.data.log_values import _iso_from_parts, parse_iso
from tests.conftest import shared_file

# 2015-05-03T03:00:00Z, the demo's first day
T0_MS = 1_430_622_000_000


def events_cfg(columns: str, **kw) -> DataConfig:
    return DataConfig(format="events", columns=columns, **kw)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ---- CSV -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_csv_delimiter_is_sniffed_and_iso_times_with_and_without_zone(tmp_path, sep):
    rows = [["uid", "extra", "product_id", "ts"],
            ["7", "x", "100", "2015-05-03T03:00:00Z"],
            ["7", "y", "101", "2015-05-03T05:00:01.5+02:00"],      # 03:00:01.5 UTC
            ["8", "z", "102", "2015-05-03 03:00:02"],              # no zone: UTC
            ["8", "z", "103", "2015-05-03"]]                       # a date: midnight UTC
    path = write(tmp_path / "log.txt", [sep.join(r) for r in rows])
    r = read_events(path, events_cfg("item=product_id,time=ts,user=uid"))
    assert r.key == "visitor"
    assert r.table.to_pydict() == {
        "visitor": [7, 7, 8, 8], "item": [100, 101, 102, 103],
        "timestamp": [T0_MS, T0_MS + 1500, T0_MS + 2000, T0_MS - 3 * 3_600_000], "event": [0, 0, 0, 0]}
    assert r.stats["time"] == {"column": "ts", "format": "auto", "read_as": "ISO-8601 text (detected)",
                               "detected": True}
    assert r.stats["file_type"] == "csv" and r.stats["bad_rows"] == {}


@pytest.mark.parametrize("values,unit,factor", [
    (["1430622000", "1430622001.25"], "seconds", 1000),
    (["1430622000000", "1430622001250"], "milliseconds", 1),
    (["1430622000000000", "1430622001250000"], "microseconds", 1e-3),
    (["1430622000000000000", "1430622001250000000"], "nanoseconds", 1e-6),
])
def test_epoch_unit_is_detected_and_reported(tmp_path, values, unit, factor):
    path = write(tmp_path / "e.csv", ["sid,item,t", f"1,5,{values[0]}", f"1,6,{values[1]}"])
    r = read_events(path, events_cfg("item=item,time=t,session=sid"))
    assert r.table.column("timestamp").to_pylist() == [T0_MS, T0_MS + 1250]
    assert r.stats["time"]["read_as"] == f"epoch {unit} (detected from the values' magnitude)"
    assert r.key == "session_key" and r.table.column("session_key").to_pylist() == [1, 1]


def test_time_format_forces_the_unit(tmp_path):
    # 1430622000 read as ms (forced) is 16.6 days after the epoch, not 2015
    path = write(tmp_path / "e.csv", ["u,i,t", "1,5,1430622000"])
    r = read_events(path, events_cfg("item=i,time=t,user=u", time_format="ms"))
    assert r.table.column("timestamp").to_pylist() == [1_430_622_000]
    assert r.stats["time"] == {"column": "t", "format": "ms", "read_as": "milliseconds", "detected": False}


def test_text_users_are_numbered_in_order_of_first_appearance(tmp_path):
    path = write(tmp_path / "e.csv", ["user,item,t", "bob,1,1430622000", "ann,2,1430622001",
                                      "bob,3,1430622002", "42,4,1430622003"])
    r = read_events(path, events_cfg("item=item,time=t,user=user"))
    assert r.table.column("visitor").to_pylist() == [0, 1, 0, 2]


def test_event_map_and_unknown_events(tmp_path):
    path = write(tmp_path / "e.csv", ["u,i,t,kind", "1,5,1430622000,click", "1,6,1430622001,cart",
                                      "1,7,1430622002,order", "1,8,1430622003,wishlist"])
    r = read_events(path, events_cfg("item=i,time=t,user=u,event=kind",
                                     event_map="click=view,cart=addtocart,order=transaction"))
    assert r.table.column("event").to_pylist() == [0, 1, 2]
    assert r.stats["bad_rows"] == {"unknown_event": {"count": 1, "first_lines": [5]}}
    assert r.stats["unknown_event_values"] == ["wishlist"]


def test_unmapped_event_values_are_named_with_the_flag_that_maps_them(tmp_path):
    path = write(tmp_path / "e.csv", ["u,i,t,kind", "1,5,1430622000,click", "1,6,1430622001,cart"])
    with pytest.raises(InputError) as e:
        read_events(path, events_cfg("item=i,time=t,user=u,event=kind"))
    msg = str(e.value)
    assert "e.csv: no valid rows" in msg and "unknown_event: 2, first at line(s) 2, 3" in msg
    assert "the event column 'kind' holds 'click', 'cart'" in msg
    assert "--event-map click=view,cart=addtocart" in msg


def test_bad_rows_are_counted_per_reason_with_line_numbers(tmp_path):
    path = write(tmp_path / "e.csv", [
        "u,i,t",
        "1,5,2015-05-03T03:00:00Z",    # 2 good
        "1,x,2015-05-03T03:00:00Z",    # 3 non-numeric item
        "",                            # 4 blank: not a row
        "1,6,2015-02-30T00:00:00",     # 5 no such day
        "1,6,2015-05-03T24:00:00",     # 6 no such hour
        "1,6,",                        # 7 missing time
        "1,6,2015-05-03T03:00:00,9",   # 8 too many fields
        "1,7,2015-05-03T03:00:00.25"])  # 9 good
    r = read_events(path, events_cfg("item=i,time=t,user=u"))
    assert r.stats["bad_rows"] == {"missing_field": {"count": 2, "first_lines": [7, 8]},
                                   "non_numeric_id": {"count": 1, "first_lines": [3]},
                                   "bad_timestamp": {"count": 2, "first_lines": [5, 6]}}
    assert r.stats["rows_read"] == 7 and r.table.column("item").to_pylist() == [5, 7]
    assert r.table.column("timestamp").to_pylist() == [T0_MS, T0_MS + 250]


@pytest.mark.parametrize("compress", ["gzip", "bz2", "zstd"])
def test_compressed_csv(tmp_path, compress):
    text = b"u,i,t\n1,5,1430622000\n2,6,1430622001\n"
    path = tmp_path / "log.csv"
    if compress == "gzip":
        path.write_bytes(gzip.compress(text))
    elif compress == "bz2":
        path.write_bytes(bz2.compress(text))
    else:
        with pa.output_stream(str(path), compression="zstd") as f:
            f.write(text)
    r = read_events(path, events_cfg("item=i,time=t,user=u"))
    assert r.stats["compression"] == compress and r.table.column("item").to_pylist() == [5, 6]


def test_missing_column_names_the_header(tmp_path):
    path = write(tmp_path / "e.csv", ["uid;sku;when", "1;2;3"])
    with pytest.raises(InputError) as e:
        read_events(path, events_cfg("item=product_id,time=when,user=uid"))
    msg = str(e.value)
    assert "e.csv: no column 'product_id' (--columns)" in msg and "'uid;sku;when'" in msg


def test_columns_are_checked_before_reading():
    with pytest.raises(InputError, match="columns: 'item=a' names no time, session or user column"):
        events_cfg("item=a")
    with pytest.raises(InputError, match="event_map: 'buy' in 'x=buy' is not one of view, addtocart"):
        events_cfg("item=a,time=b,user=c", event_map="x=buy")
    with pytest.raises(InputError, match="columns: only for --format events"):
        DataConfig(format="retailrocket", columns="item=a")


# ---- Parquet and JSON Lines -------------------------------------------------------------------------

def test_parquet_typed_columns_native_timestamps_and_row_numbers(tmp_path):
    t = pa.table({
        "user_id": pa.array(["u1", "u2", None, "u1"]).dictionary_encode(),
        "sku": pa.array([5, -6, 7, 8], pa.int64()),
        "at": pa.array([T0_MS, T0_MS + 1, T0_MS + 2, T0_MS + 3], pa.timestamp("ms", tz="Europe/Berlin")),
        "other": pa.array([1.0, 2.0, 3.0, 4.0])})
    pq.write_table(t, tmp_path / "log.parquet")
    r = read_events(tmp_path / "log.parquet", events_cfg("item=sku,time=at,user=user_id"))
    assert r.table.to_pydict() == {"visitor": [0, 0], "item": [5, 8], "timestamp": [T0_MS, T0_MS + 3],
                                   "event": [0, 0]}
    # rows 2 (a negative id) and 3 (no user): Parquet rows are numbered from 1
    assert r.stats["bad_rows"] == {"missing_field": {"count": 1, "first_lines": [3]},
                                   "non_numeric_id": {"count": 1, "first_lines": [2]}}
    assert r.stats["numbered_by"] == "row" and r.stats["file_type"] == "parquet"
    assert r.stats["time"]["read_as"] == "native timestamp[ms, tz=Europe/Berlin]"


def test_parquet_iso_text_and_epoch_integers(tmp_path):
    pq.write_table(pa.table({"u": [1, 1], "i": [3, 4], "t": ["2015-05-03T03:00:00Z", "2015-05-03T04:00:00+01:00"]}),
                   tmp_path / "a.parquet")
    r = read_events(tmp_path / "a.parquet", events_cfg("item=i,time=t,user=u"))
    assert r.table.column("timestamp").to_pylist() == [T0_MS, T0_MS]
    pq.write_table(pa.table({"u": [1], "i": [3], "t": pa.array([T0_MS * 1000 + 499], pa.int64())}),
                   tmp_path / "b.parquet")
    r = read_events(tmp_path / "b.parquet", events_cfg("item=i,time=t,user=u"))
    assert r.table.column("timestamp").to_pylist() == [T0_MS]      # 499 us round to 0 ms
    assert r.stats["time"]["read_as"].startswith("epoch microseconds")


def test_json_lines_gzip(tmp_path):
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(3):
            f.write(json.dumps({"s": 10 + i // 2, "i": 1 + i, "t": T0_MS + i, "e": "addtocart"}) + "\n")
    r = read_events(path, events_cfg("item=i,time=t,session=s,event=e"))
    assert r.table.to_pydict() == {"session_key": [10, 10, 11], "item": [1, 2, 3],
                                   "timestamp": [T0_MS, T0_MS + 1, T0_MS + 2], "event": [1, 1, 1]}
    assert r.stats["file_type"] == "jsonl" and r.stats["compression"] == "gzip"


def test_json_lines_that_are_not_json_name_the_file(tmp_path):
    path = write(tmp_path / "log.jsonl", ['{"s": 1, "i": 2, "t": 3}', "not json"])
    with pytest.raises(InputError, match="log.jsonl: cannot read it as JSON Lines"):
        read_events(path, events_cfg("item=i,time=t,session=s"))


def test_zip_and_compressed_parquet_are_named(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "log.zip", "w") as z:
        z.writestr("log.csv", "u,i,t\n")
    with pytest.raises(InputError, match="log.zip: is a zip archive"):
        read_events(tmp_path / "log.zip", events_cfg("item=i,time=t,user=u"))
    pq.write_table(pa.table({"u": [1], "i": [2], "t": [3]}), tmp_path / "p.parquet")
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress((tmp_path / "p.parquet").read_bytes()))
    with pytest.raises(InputError, match="p.parquet.gz: is a gzip-compressed Parquet file; decompress it"):
        read_events(tmp_path / "p.parquet.gz", events_cfg("item=i,time=t,user=u"))


# ---- ISO-8601: the grammar, and both conversions agree ---------------------------------------------

def test_iso_grammar_and_both_conversions_agree():
    good = ["2015-05-03T03:00:00Z", "2015-05-03T03:00:00.123456789+02:00", "2015-05-03 03:00",
            "2015-05-03T03", "2016-02-29T23:59:59.5-0130", "2015-05-03", "1999-12-31T23:59:59+05"]
    bad = ["2015-02-30", "2015-13-01T00:00:00", "2015-05-03T24:00:00", "2015-05-03T23:59:60",
           "20150503T030000", "2015-05-03T03:00:00 Z", "2015-5-3", "yesterday", "2015-05-03Z"]
    s = pa.array(good + bad)
    fast_ms, fast_ok = parse_iso(pa.array(good))
    parts_ms, parts_ok = _iso_from_parts(pa.array(good), np.ones(len(good), bool))
    assert fast_ok.all() and parts_ok.all() and fast_ms.tolist() == parts_ms.tolist()
    ms, ok = parse_iso(s)                    # a batch with bad values: converted from the parts
    assert ok.tolist() == [True] * len(good) + [False] * len(bad)
    assert ms[:len(good)].tolist() == fast_ms.tolist()
    # hand-checked: 03:00 +02:00 is 01:00 UTC; 23:59:59.5 -01:30 is 01:29:59.5 UTC on 2016-03-01
    assert fast_ms[1] == T0_MS - 2 * 3_600_000 + 123
    assert fast_ms[4] == 1_456_795_799_500


# ---- presets are this reader: byte-identical to the readers before it -----------------------------

# content hashes of the canonical tables the readers before the events format produced (commit
# 56ec0c3), measured once: blake2b-8 of the four columns' bytes. The Parquet files the ingest stage
# wrote from them were byte-identical too (checked when the reader was rewritten).
BEFORE = {"yoochoose-clicks-100k_train_full.txt.gz": ("rsc15", "4d42bbf5537fed51"),
          "yoochoose-clicks-100k_test.txt.gz": ("rsc15", "b30bd41a6a8fce76"),
          "diginetica-sample_train-item-views.csv.gz": ("diginetica", "5564da289095ec21")}


def content_hash(table: pa.Table) -> str:
    blob = b"".join(c.to_numpy().tobytes() for c in table.columns) + str(table.schema).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(BEFORE))
def test_presets_give_the_tables_of_the_readers_before(name):
    fmt, expected = BEFORE[name]
    assert content_hash(read_events(shared_file(name), fmt).table) == expected


@pytest.mark.realdata
def test_a_preset_is_the_events_format_with_fixed_columns(tmp_path):
    """The RSC15 preset and the events format with RSC15's columns read a damaged copy of the shared
    YooChoose sample (rows with a bad id, a bad time, a missing field, an extra field) alike."""
    lines = gzip.open(shared_file("yoochoose-clicks-100k_test.txt.gz"), "rt").read().splitlines()
    for i, damage in ((5, "x{}"), (9, "{}\t1"), (14, "1\t2")):
        lines[i] = damage.format(lines[i])
    lines[20] = lines[20].rsplit("\t", 1)[0] + "\tsoon"
    path = write(tmp_path / "yc.tsv", lines)
    preset = read_events(path, "rsc15")
    generic = read_events(path, events_cfg("session=SessionId,item=ItemId,time=Time", time_format="s"))
    assert preset.table.rename_columns(generic.table.column_names).equals(generic.table)
    assert preset.stats["bad_rows"] == generic.stats["bad_rows"] == {
        "missing_field": {"count": 2, "first_lines": [10, 15]},
        "non_numeric_id": {"count": 1, "first_lines": [6]},
        "bad_timestamp": {"count": 1, "first_lines": [21]}}


# ---- end to end: no session column -----------------------------------------------------------------

def test_import_without_session_column_cuts_user_streams_at_the_gap(tmp_path):
    # user 7: three clicks a minute apart, 31 minutes of silence, two more; user 8: three clicks
    rows = ["uid,product_id,ts"]
    for m, item in ((0, 1), (1, 2), (2, 3), (33, 4), (34, 5)):
        rows.append(f"7,{item},2015-05-03T03:{m:02d}:00Z")
    for m, item in ((0, 6), (5, 7), (10, 8)):
        rows.append(f"8,{item},2015-05-04T10:{m:02d}:00")
    path = write(tmp_path / "shop.csv", rows)
    ws = tmp_path / "ws"
    assert cli(["--workspace", str(ws), "-q", "data", "import", str(path), "--format", "events", "--name",
                "shop", "--columns", "item=product_id,time=ts,user=uid", "--min-session-length", "2",
                "--no-build"]) == 0
    assert cli(["--workspace", str(ws), "-q", "data", "build", "shop", "--upto", "sessionize"]) == 0
    from engine.data.sessions import Sessions
    s = Sessions.read(ws / "datasets" / "shop" / "sessionize" / "sessions.parquet")
    got = [s.items[s.offsets[i]:s.offsets[i + 1]].tolist() for i in range(len(s))]
    assert got == [[1, 2, 3], [4, 5], [6, 7, 8]]
