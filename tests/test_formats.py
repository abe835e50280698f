"""Readers: each raw format into the canonical events table, bad rows counted by line, clear errors."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from engine.core.errors import InputError
from engine.core.schema import DataFormat, values
from engine.data.format_specs import source_is_folder
from engine.data.formats import FORMAT_SPECS, ReadResult, detect_format, read_events
from tests.conftest import shared_file

RR_HEADER = "timestamp,visitorid,event,itemid,transactionid"
RR_ROWS = ["1433221332117,257597,view,355908,",
           "1433224214164,992329,addtocart,248676,",
           "1433223236124,599528,transaction,356475,4000"]
RR_GOOD = {"visitor": [257597, 992329, 599528], "item": [355908, 248676, 356475],
           "timestamp": [1433221332117, 1433224214164, 1433223236124], "event": [0, 1, 2]}


def write(path: Path, lines: list[str], gz: bool = False, end: str = "\n") -> Path:
    data = "".join(line + end for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rr(tmp_path: Path, rows: list[str], name: str = "events.csv") -> Path:
    return write(tmp_path / name, [RR_HEADER, *rows])


def bad(result: ReadResult) -> dict:
    return result.stats["bad_rows"]


# ---- formats ----------------------------------------------------------------------------------

def test_format_specs_cover_config_formats():
    # every format is a preset with a spec, the events format (columns named by --columns), or a
    # folder (srgnn: engine.data.srgnn reads it)
    assert (*FORMAT_SPECS, "events") == tuple(f for f in values(DataFormat) if not source_is_folder(f))
    assert [f for f in values(DataFormat) if source_is_folder(f)] == ["srgnn"]
    assert FORMAT_SPECS["retailrocket"].key == "visitor"
    assert FORMAT_SPECS["rsc15"].key == FORMAT_SPECS["diginetica"].key == "session_key"


@pytest.mark.parametrize("gz", [False, True])
def test_retailrocket(tmp_path, gz):
    # a gzip file named .csv: compression comes from the magic bytes, not the extension
    path = write(tmp_path / "events.csv", [RR_HEADER, *RR_ROWS], gz=gz)
    r = read_events(path, "retailrocket")
    assert r.key == "visitor"
    assert r.table.column_names == ["visitor", "item", "timestamp", "event"]
    assert [str(t) for t in r.table.schema.types] == ["int64", "int64", "int64", "int8"]
    assert r.table.to_pydict() == RR_GOOD
    assert r.stats == {"path": str(path), "format": "retailrocket",
                       "compression": "gzip" if gz else "none",
                       "rows_read": 3, "rows_valid": 3, "bad_rows": {}}
    json.dumps(r.stats)


def test_plain_file_named_gz_is_read_as_plain(tmp_path):
    r = read_events(write(tmp_path / "events.csv.gz", [RR_HEADER, *RR_ROWS]), "retailrocket")
    assert r.stats["compression"] == "none"
    assert r.table.to_pydict() == RR_GOOD


def test_crlf_line_ends(tmp_path):
    r = read_events(write(tmp_path / "e.csv", [RR_HEADER, *RR_ROWS], end="\r\n"), "retailrocket")
    assert r.table.to_pydict() == RR_GOOD


@pytest.mark.parametrize("sep", ["\t", ","])
@pytest.mark.parametrize("gz", [False, True])
def test_rsc15_seconds_to_ms(tmp_path, sep, gz):
    rows = [["SessionId", "ItemId", "Time"],
            ["1", "214536502", "1396860669.277"],
            ["1", "214536506", "1396860886.998"],
            ["2", "214577561", "1396802883.5"],
            ["2", "214577561", "1396802890"]]
    path = write(tmp_path / "clicks.txt", [sep.join(r) for r in rows], gz=gz)
    r = read_events(path, "rsc15")
    assert r.key == "session_key"
    assert r.table.to_pydict() == {
        "session_key": [1, 1, 2, 2], "item": [214536502, 214536506, 214577561, 214577561],
        "timestamp": [1396860669277, 1396860886998, 1396802883500, 1396802890000],
        "event": [0, 0, 0, 0]}


@pytest.mark.parametrize("gz", [False, True])
def test_diginetica_date_plus_offset(tmp_path, gz):
    path = write(tmp_path / "views.csv", [
        "session_id;user_id;item_id;timeframe;eventdate",
        "1;NA;81766;526309;2016-05-09",
        "1;NA;31331;1031018;2016-05-09",
        "2;5;32118;0;2016-01-03"], gz=gz)
    r = read_events(path, "diginetica")
    # 2016-05-09 is day 16930 (1462752000000 ms); 2016-01-03 is day 16803 (1451779200000 ms)
    assert r.table.to_pydict() == {
        "session_key": [1, 1, 2], "item": [81766, 31331, 32118],
        "timestamp": [1462752526309, 1462753031018, 1451779200000], "event": [0, 0, 0]}


def test_progress_is_reported_a_few_times(tmp_path):
    seen = []
    read_events(rr(tmp_path, RR_ROWS), "retailrocket", progress=seen.append)
    assert 2 <= len(seen) <= 4
    assert {p.stage for p in seen} == {"ingest"}
    assert seen[-1].done == seen[-1].total == 3


# ---- bad rows -----------------------------------------------------------------------------------

def test_non_numeric_ids(tmp_path):
    r = read_events(rr(tmp_path, [RR_ROWS[0], "1433221332118,abc,view,1,", RR_ROWS[1],
                                  "1433221332119,5,view,x9,", "1433221332119,-5,view,9,"]),
                    "retailrocket")
    assert bad(r) == {"non_numeric_id": {"count": 3, "first_lines": [3, 5, 6]}}
    assert r.stats["rows_read"] == 5 and r.stats["rows_valid"] == 2
    assert r.table.column("visitor").to_pylist() == [257597, 992329]


def test_unparseable_and_negative_timestamps(tmp_path):
    r = read_events(rr(tmp_path, ["2015-06-01,5,view,1,", RR_ROWS[0], "-1433221332117,5,view,1,"]),
                    "retailrocket")
    assert bad(r) == {"bad_timestamp": {"count": 2, "first_lines": [2, 4]}}
    assert r.table.to_pydict()["timestamp"] == [1433221332117]


def test_rsc15_bad_times(tmp_path):
    path = write(tmp_path / "c.txt", ["SessionId\tItemId\tTime", "1\t7\tabc", "1\t8\t1396860669.5",
                                      "1\t9\t-1.5", "2\t9\tnan", "2\t3\t1e3"])
    r = read_events(path, "rsc15")
    assert bad(r) == {"bad_timestamp": {"count": 3, "first_lines": [2, 4, 5]}}
    assert r.table.to_pydict()["timestamp"] == [1396860669500, 1_000_000]


def test_diginetica_bad_dates_and_offsets(tmp_path):
    path = write(tmp_path / "v.csv", [
        "session_id;user_id;item_id;timeframe;eventdate",
        "1;NA;5;10;2016-02-30",     # no such day
        "1;NA;5;10;2016/05/09",     # wrong date syntax
        "1;NA;5;-10;2016-05-09",    # negative offset
        "1;NA;5;0;1969-12-31",      # before the epoch: negative timestamp
        "2;NA;6;1000;1970-01-02"])
    r = read_events(path, "diginetica")
    assert bad(r) == {"bad_timestamp": {"count": 4, "first_lines": [2, 3, 4, 5]}}
    assert r.table.to_pydict()["timestamp"] == [86_401_000]


def test_unknown_event(tmp_path):
    r = read_events(rr(tmp_path, [RR_ROWS[0], "1433221332117,5,click,1,", "1433221332117,5,VIEWS,1,"]),
                    "retailrocket")
    assert bad(r) == {"unknown_event": {"count": 2, "first_lines": [3, 4]}}


def test_missing_fields_empty_value_too_few_and_too_many(tmp_path):
    r = read_events(rr(tmp_path, [RR_ROWS[0],
                                  "1433221332117,,view,1,",    # empty value
                                  "1433221332117,5,view",      # too few fields
                                  "1433221332117,5,view,1,,",  # too many fields
                                  ",5,view,1,",                # empty timestamp
                                  RR_ROWS[1]]),
                    "retailrocket")
    assert bad(r) == {"missing_field": {"count": 4, "first_lines": [3, 4, 5, 6]}}
    assert r.stats["rows_read"] == 6 and r.stats["rows_valid"] == 2
    assert r.table.column("visitor").to_pylist() == [257597, 992329]


def test_each_row_counted_once_first_five_lines_blank_lines_ignored(tmp_path):
    rows = [",,view,1,",                       # line 2: two empty values, counted once
            "1,2",                             # 3: too few fields
            "",                                # 4: blank, ignored
            "x,,click,1,",                     # 5: empty visitor wins over the other problems
            "1,2,view",                        # 6
            RR_ROWS[0],                        # 7: good
            "1,2,view,3,4,5",                  # 8
            "1,,view,3,",                      # 9
            "abc,5,click,1,",                  # 10: bad timestamp comes before unknown event
            RR_ROWS[2]]                        # 11: good
    r = read_events(rr(tmp_path, rows), "retailrocket")
    assert bad(r) == {"missing_field": {"count": 6, "first_lines": [2, 3, 5, 6, 8]},
                      "bad_timestamp": {"count": 1, "first_lines": [10]}}
    assert r.stats["rows_read"] == 9 and r.stats["rows_valid"] == 2
    assert r.table.to_pydict()["item"] == [355908, 356475]


def test_checked_path_gives_the_same_rows_as_the_fast_path(tmp_path):
    good = [f"{1433221332117 + i},{i},{('view', 'addtocart', 'transaction')[i % 3]},{100 + i},"
            for i in range(50)]
    fast = read_events(rr(tmp_path, good, "a.csv"), "retailrocket").table
    checked = read_events(rr(tmp_path, good[:20] + ["oops"] + good[20:], "b.csv"), "retailrocket")
    assert bad(checked) == {"missing_field": {"count": 1, "first_lines": [22]}}
    assert checked.table.equals(fast)


def test_crlf_line_numbers(tmp_path):
    path = write(tmp_path / "e.csv", [RR_HEADER, RR_ROWS[0], "1,x,view,1,", RR_ROWS[1]], end="\r\n")
    r = read_events(path, "retailrocket")
    assert bad(r) == {"non_numeric_id": {"count": 1, "first_lines": [3]}}
    assert r.table.column("visitor").to_pylist() == [257597, 992329]


# ---- errors -----------------------------------------------------------------------------------

def test_no_valid_rows(tmp_path):
    path = rr(tmp_path, ["1,x,view,1,", "1,2,click,3,"], name="allbad.csv")
    with pytest.raises(InputError) as e:
        read_events(path, "retailrocket")
    msg = str(e.value)
    assert "allbad.csv" in msg and "no valid rows" in msg and "2 data rows are bad" in msg
    assert "non_numeric_id: 1, first at line(s) 2" in msg and "unknown_event: 1" in msg


def test_rows_with_another_separator_are_named(tmp_path):
    path = rr(tmp_path, ["1433221332117;257597;view;355908;"], name="semi.csv")
    with pytest.raises(InputError, match="semi.csv.*no valid rows.*separated by semicolon"):
        read_events(path, "retailrocket")


def test_header_only(tmp_path):
    with pytest.raises(InputError, match="h.csv: no data rows"):
        read_events(write(tmp_path / "h.csv", [RR_HEADER, ""]), "retailrocket")


def test_wrong_header(tmp_path):
    path = write(tmp_path / "clicks.txt", ["SessionId\tItemId\tTime", "1\t2\t3.0"])
    with pytest.raises(InputError) as e:
        read_events(path, "retailrocket")
    msg = str(e.value)
    assert "clicks.txt" in msg and "wrong header" in msg
    assert RR_HEADER in msg and "SessionId\\tItemId\\tTime" in msg
    assert "matches format 'rsc15'" in msg


@pytest.mark.parametrize("sep,name", [(";", "semicolon ';'"), ("\t", "tab")])
def test_wrong_delimiter(tmp_path, sep, name):
    path = write(tmp_path / "events.csv", [RR_HEADER.replace(",", sep),
                                           RR_ROWS[0].replace(",", sep)])
    with pytest.raises(InputError) as e:
        read_events(path, "retailrocket")
    msg = str(e.value)
    assert "events.csv" in msg and f"separated by {name}" in msg and "comma ','" in msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.csv: file not found; expected a RetailRocket"):
        read_events(tmp_path / "nope.csv", "retailrocket")


@pytest.mark.parametrize("gz", [False, True])
def test_empty_file(tmp_path, gz):
    path = tmp_path / "empty.csv"
    path.write_bytes(gzip.compress(b"") if gz else b"")
    with pytest.raises(InputError, match=r"empty.csv: file is empty; expected .*timestamp,visitorid"):
        read_events(path, "retailrocket")


def test_unknown_format(tmp_path):
    with pytest.raises(InputError) as e:
        read_events(rr(tmp_path, RR_ROWS), "yoochoose")
    msg = str(e.value)
    assert "events.csv" in msg and "'yoochoose'" in msg
    assert "retailrocket, rsc15, diginetica" in msg


def test_zip_archive_is_named(tmp_path):
    path = tmp_path / "events.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("events.csv", RR_HEADER + "\n")
    with pytest.raises(InputError, match="events.zip: is a zip archive; unzip it"):
        read_events(path, "retailrocket")


# ---- detect_format ------------------------------------------------------------------------------

@pytest.mark.parametrize("header,expected", [
    (RR_HEADER, "retailrocket"),
    ("SessionId\tItemId\tTime", "rsc15"),
    ("SessionId,ItemId,Time", "rsc15"),
    ("session_id;user_id;item_id;timeframe;eventdate", "diginetica"),
    ("\ufefftimestamp,visitorid,event,itemid,transactionid", "retailrocket"),  # UTF-8 BOM
])
@pytest.mark.parametrize("gz", [False, True])
def test_detect_format(tmp_path, header, expected, gz):
    assert detect_format(write(tmp_path / "f.csv", [header, "1"], gz=gz)) == expected


def test_detect_format_unknown_header(tmp_path):
    with pytest.raises(InputError) as e:
        detect_format(write(tmp_path / "odd.csv", ["a,b,c", "1,2,3"]))
    msg = str(e.value)
    assert "odd.csv" in msg and "'a,b,c'" in msg and RR_HEADER in msg and "diginetica" in msg


def test_detect_format_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match="gone.csv: file not found"):
        detect_format(tmp_path / "gone.csv")
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(InputError, match="e.csv: file is empty"):
        detect_format(tmp_path / "e.csv")


# ---- real samples (skipped when ../shared/data is absent) ----------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("name,fmt,rows", [
    ("yoochoose-clicks-100k_train_full.txt.gz", "rsc15", 70_278),
    ("yoochoose-clicks-100k_test.txt.gz", "rsc15", 13_568),
    ("diginetica-sample_train-item-views.csv.gz", "diginetica", 12_391),
])
def test_real_samples(name, fmt, rows):
    path = shared_file(name)
    assert detect_format(path) == fmt
    r = read_events(path, fmt)
    assert r.stats["rows_read"] == r.stats["rows_valid"] == r.table.num_rows == rows
    assert r.stats["bad_rows"] == {} and r.stats["compression"] == "gzip"
    ts = r.table.column("timestamp").to_numpy()
    if fmt == "rsc15":  # 2014-04-01 .. 2014-04-08 (UTC)
        assert 1396310400000 <= ts.min() and ts.max() < 1397001600000
    else:               # 2016-01-03 .. 2016-06-01, plus offsets inside the day's sessions
        assert 1451779200000 <= ts.min() and ts.max() < 1464825600000
