"""Reliability probes on the data side (issue 21), each run against the code as a user would hit it:
long item ids, SR-GNN pickles that are too deep or expand to 10^8 ids (under a memory cap), symlink
loops, ids near 2**63 on both read paths, non-UTF-8 bytes and very long lines in a log."""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.data.formats import read_events
from engine.data.srgnn import read_srgnn
from engine.core.errors import InputError
from tests.reliability.helpers import ROOT, one_line

RR_HEADER = "timestamp,visitorid,event,itemid,transactionid"


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    return tiny_demo_ws


def srgnn_folder(tmp_path: Path, train: bytes, test: object = ([[1]], [2])) -> Path:
    d = tmp_path / "srgnn"
    d.mkdir()
    (d / "all_train_seq.txt").write_bytes(train)
    (d / "test.txt").write_bytes(pickle.dumps(test, protocol=2))
    return d


# ---- 1. a long number as an item id ----------------------------------------------------------------
def test_1_a_4301_digit_item_id_is_a_one_line_error(ws, capsys):
    # int() of more than 4,300 digits raises ValueError: the length is checked first
    assert cli(["--workspace", str(ws.root), "recommend", "baseline:pop@demo-tiny", "263", "9" * 4301]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == ("sessrec: error: item id 99999999999999999999... (4,301 characters) is out of range: "
                    "item ids are whole numbers from 0 to 9223372036854775807")


@pytest.mark.parametrize("text, ids, error", [
    ("0007, 9223372036854775807", [7, 9223372036854775807], None),
    ("9223372036854775808", None, "item id 9223372036854775808 is out of range"),
    ("-5", None, "item id -5 is out of range"),
    ("²", None, "item id '²' is not a number"),           # str.isdigit() is True, int() refuses it
    ("12 ٣", None, "item id '٣' is not a number"),         # an Arabic-Indic digit: not an ASCII id
])
def test_1_the_id_parser_says_what_an_id_is(text, ids, error):
    from engine.data.items import parse_item_ids
    if error is None:
        assert parse_item_ids(text) == ids
    else:
        with pytest.raises(InputError, match=error):
            parse_item_ids(text)


# ---- 2. and 4. SR-GNN pickles: too deep, and a memo bomb ---------------------------------------------
def test_2_a_pickle_nested_200000_deep_is_refused_naming_the_limit(tmp_path):
    # [[1, 2], [[[...[1]...]]]] written opcode by opcode (pickle.dumps itself recurses): EMPTY_LIST
    # 200,000 times, one int, then APPEND 200,000 times
    n = 200_000
    deep = b"\x80\x02](](K\x01K\x02e" + b"]" * n + b"K\x01" + b"a" * n + b"e."
    assert pickle.loads(deep)[0] == [1, 2]
    d = srgnn_folder(tmp_path, deep)
    with pytest.raises(InputError) as e:
        read_srgnn(d)
    assert str(e.value) == (f"{d / 'all_train_seq.txt'}: nested more than 16 levels deep; an SR-GNN "
                            f"pickle holds lists of lists of ints (refused while loading: the file is "
                            f"corrupt or crafted)")


def test_2_a_wrong_value_deep_inside_is_described_briefly(tmp_path):
    # a session holding a list nested 14 deep (within the limit): the message quotes it, bounded
    nested: object = [5]
    for _ in range(13):
        nested = [nested]
    d = srgnn_folder(tmp_path, pickle.dumps([[1, 2], [3, nested]], protocol=2))
    with pytest.raises(InputError, match=r"sessions\[1\]\[1\]: expected an item id \(an int >= 1\), "
                                         r"found list \[\[\[\.\.\.\]\]\]$"):
        read_srgnn(d)


def test_4_a_memo_bomb_is_refused_quickly_under_a_memory_cap(tmp_path):
    # 100,000 references to one list of 1,000 ids: 202,209 bytes that expand to 10^8 ids (the probe
    # took 4 GB and 16 s, then MemoryError). Under a 1 GiB address-space cap the import must refuse
    # it with the limit named, within seconds, and leave no dataset behind
    ids = [1] * 1000
    bomb = pickle.dumps([ids] * 100_000, protocol=2)
    assert len(bomb) == 202_209
    d = srgnn_folder(tmp_path, bomb)
    ws_root = tmp_path / "ws"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from engine.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "--workspace", str(ws_root), "-q", "data", "import",
                        str(d), "--format", "srgnn", "--name", "bomb"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr
    assert one_line(r.stderr) == (
        f"sessrec: error: {d / 'all_train_seq.txt'}: holds more than 50,000,000 values (lists referred "
        f"to several times count each time); refused while loading, before it is expanded (the file is "
        f"corrupt or crafted to exhaust memory)")
    assert not (ws_root / "datasets" / "bomb").exists()


def test_4_the_loader_limits_bytes_values_depth_and_self_reference(tmp_path):
    from engine.data.srgnn import load_pickle
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([[1, 2, 3], [4, 5]], protocol=2))
    assert load_pickle(path, max_values=7) == [[1, 2, 3], [4, 5]]    # 2 sessions + 5 ids
    with pytest.raises(InputError, match="holds more than 6 values"):
        load_pickle(path, max_values=6)
    with pytest.raises(InputError, match="nested more than 1 levels deep"):
        load_pickle(path, max_depth=1)
    with pytest.raises(InputError, match=f"over {len(path.read_bytes()) - 1:,} bytes uncompressed"):
        load_pickle(path, max_bytes=len(path.read_bytes()) - 1)
    loop: list = [1]
    loop.append(loop)
    path.write_bytes(pickle.dumps(loop, protocol=2))
    with pytest.raises(InputError, match="a container refers to itself"):
        load_pickle(path)


# ---- 9. ids near 2**63 on both read paths -----------------------------------------------------------
IDS = ["0", "007", "999999999999999999", "1000000000000000000", "9223372036854775807",
       "0009223372036854775807", "9223372036854775808", "18446744073709551616", "+5", "-5", "1e3"]
VALID = {"0": 0, "007": 7, "999999999999999999": 999999999999999999,
         "1000000000000000000": 10 ** 18, "9223372036854775807": 2 ** 63 - 1,
         "0009223372036854775807": 2 ** 63 - 1}


@pytest.mark.parametrize("item", IDS)
def test_9_both_read_paths_accept_exactly_the_same_ids(tmp_path, item):
    good = "1433221332117,257597,view,{},"
    clean = tmp_path / "clean.csv"
    clean.write_text(f"{RR_HEADER}\n{good.format(item)}\n{good.format(355908)}\n")
    # one bad row elsewhere sends the whole file through the row-by-row checker
    checked = tmp_path / "checked.csv"
    checked.write_text(f"{RR_HEADER}\n{good.format(item)}\n{good.format(355908)}\nnot,a,row,at,all\n")
    got = []
    for path in (clean, checked):
        r = read_events(path, "retailrocket")
        got.append(r.table.column("item").to_pylist())
        if path == checked:
            assert r.stats["bad_rows"]["non_numeric_id"]["first_lines"][-1] == 4
    want = [VALID[item], 355908] if item in VALID else [355908]
    assert got == [want, want]


# ---- 10. a byte that is not UTF-8, a 10M-character line ----------------------------------------------
RR_ROWS = ["1433221332117,257597,view,355908,", "1433224214164,992329,addtocart,248676,",
           "1433223236124,599528,transaction,356475,4000"]


@pytest.mark.parametrize("gz", [False, True])
def test_10_a_non_utf8_byte_costs_its_row_not_the_file(tmp_path, gz):
    import gzip
    data = (f"{RR_HEADER}\n{RR_ROWS[0]}\n".encode()
            + b"1433224214164,992329,add\xfftocart,248676,\n"      # line 3: the event is not UTF-8
            + b"14332\xff,1,view,2,,\n"                              # line 4: also a field too many
            + f"{RR_ROWS[2]}\n".encode())
    path = tmp_path / "events.csv"
    path.write_bytes(gzip.compress(data) if gz else data)
    r = read_events(path, "retailrocket")
    assert r.table.column("item").to_pylist() == [355908, 356475]
    assert r.stats["rows_read"] == 4 and r.stats["rows_valid"] == 2
    assert r.stats["bad_rows"] == {"missing_field": {"count": 1, "first_lines": [4]},
                                   "unknown_event": {"count": 1, "first_lines": [3]}}


def test_10_a_10m_character_line_is_one_bad_row(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(f"{RR_HEADER}\n{RR_ROWS[0]}\n{'9' * 10_000_000}\n{RR_ROWS[1]}\n")
    r = read_events(path, "retailrocket")
    assert r.table.column("item").to_pylist() == [355908, 248676]
    assert r.stats["bad_rows"] == {"missing_field": {"count": 1, "first_lines": [3]}}


def test_10_a_line_longer_than_any_block_is_named(tmp_path, monkeypatch):
    import engine.data.formats as formats
    monkeypatch.setattr(formats, "MAX_BLOCK_SIZE", 16 << 20)    # reads lines up to 8 MiB
    path = tmp_path / "events.csv"
    path.write_text(f"{RR_HEADER}\n{RR_ROWS[0]}\n{RR_ROWS[1]}\n{'9' * 10_000_000}\n{RR_ROWS[2]}\n")
    with pytest.raises(InputError) as e:
        read_events(path, "retailrocket")
    assert str(e.value) == (f"{path}: line 4 is 10,000,000 bytes long, longer than sessrec reads "
                            f"(8,388,608); a row of a RetailRocket events.csv is a few dozen bytes: the file is damaged "
                            f"or is not a click log")


# ---- 12. symbolic link loops --------------------------------------------------------------------------
def _srgnn_loop_folder(tmp_path: Path) -> Path:
    d = srgnn_folder(tmp_path, pickle.dumps([[1, 2, 3], [4, 5]], protocol=2), ([[1, 2], [1]], [3, 2]))
    (d / "all_train_seq.txt").unlink()
    (d / "all_train_seq.txt").symlink_to("all_train_seq.txt")          # a link to itself
    return d


def test_12_a_symlink_loop_as_an_srgnn_file_is_named(tmp_path, capsys):
    d = _srgnn_loop_folder(tmp_path)
    assert cli(["--workspace", str(tmp_path / "ws"), "data", "import", str(d), "--format", "srgnn",
                "--name", "x"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"sessrec: error: {d / 'all_train_seq.txt'}: is a symbolic link loop (following its links leads "
        f"back to itself); expected SR-GNN's all_train_seq.txt pickle")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert cli(["--workspace", str(tmp_path / "ws"), "data", "import", str(loop), "--format", "srgnn",
                "--name", "x"]) == 2
    assert f"{loop}: is a symbolic link loop" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("fmt", ["srgnn", "retailrocket"])
def test_12_a_source_that_became_a_loop_is_named_by_build(tmp_path, capsys, fmt):
    if fmt == "srgnn":
        src = srgnn_folder(tmp_path, pickle.dumps([[1, 2, 3], [4, 5]], protocol=2), ([[1, 2], [1]], [3, 2]))
        looped = src / "all_train_seq.txt"
    else:
        src = looped = tmp_path / "events.csv"
        src.write_text(f"{RR_HEADER}\n" + "\n".join(RR_ROWS) + "\n")
    ws_root = str(tmp_path / "ws")
    assert cli(["--workspace", ws_root, "-q", "data", "import", str(src), "--format", fmt, "--name", "x",
                "--no-build"]) == 0
    looped.unlink()
    looped.symlink_to(looped.name)
    capsys.readouterr()
    assert cli(["--workspace", ws_root, "data", "build", "x"]) == 2
    assert f"{looped}: is a symbolic link loop" in one_line(capsys.readouterr().err)
