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
from engine.errors import InputError
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
