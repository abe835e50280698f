"""The srgnn format: SR-GNN's published benchmark folders (two pickles), read safely and kept exactly."""

from __future__ import annotations

import collections
import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as cli
from engine.core.config import DataConfig
from engine.core.errors import InputError
from engine.data.format_specs import SRGNN_DATA_DEFAULTS as SPECS_DEFAULTS
from engine.data.srgnn import SESSION_SPACING_MS, SRGNN_DATA_DEFAULTS, load_pickle, read_srgnn, rebuild_test_sessions
from tests.conftest import SHARED_DATA

# train sessions, and test sessions [1, 2, 3] and [7, 1] as SR-GNN writes them: longest prefix first
TRAIN = [[1, 2, 3], [4, 5], [2, 6, 2]]
TEST = ([[1, 2], [1], [7]], [3, 2, 1])


def dump(path: Path, obj, compress: bool = False) -> Path:
    data = pickle.dumps(obj, protocol=2)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def folder(tmp_path: Path, train=TRAIN, test=TEST, train_name="all_train_seq.txt.gz",
           test_name="test.txt.gz", compress=True) -> Path:
    d = tmp_path / "bench"
    d.mkdir(exist_ok=True)
    dump(d / train_name, train, compress)
    dump(d / test_name, test, compress)
    return d


def column(res, name: str) -> list:
    return res.table.column(name).to_pylist()


# ---- reading ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_reads_sessions_and_rebuilds_the_test_sessions(tmp_path, compress):
    train, test = read_srgnn(folder(tmp_path, compress=compress))
    assert column(train, "session_key") == [0, 0, 0, 1, 1, 2, 2, 2]
    assert column(train, "item") == [1, 2, 3, 4, 5, 2, 6, 2]
    # one minute between sessions, 1 ms between events: the file order is the time order
    m = SESSION_SPACING_MS
    assert column(train, "timestamp") == [0, 1, 2, m, m + 1, 2 * m, 2 * m + 1, 2 * m + 2]
    assert set(column(train, "event")) == {0}
    # test sessions come after every train session, in file order
    assert column(test, "session_key") == [3, 3, 3, 4, 4]
    assert column(test, "item") == [1, 2, 3, 7, 1]
    assert column(test, "timestamp") == [3 * m, 3 * m + 1, 3 * m + 2, 4 * m, 4 * m + 1]
    assert train.key == test.key == "session_key"
    assert train.stats["rows_read"] == 8 and train.stats["sessions"] == 3 and train.stats["prefixes"] == 5
    assert test.stats["rows_read"] == 5 and test.stats["sessions"] == 2 and test.stats["prefixes"] == 3
    assert train.stats["compression"] == ("gzip" if compress else "none")
    assert train.stats["format"] == "srgnn" and train.stats["bad_rows"] == {}


def test_compression_is_sniffed_not_taken_from_the_name(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    dump(d / "all_train_seq.txt", TRAIN, compress=True)      # gzip under a plain name
    dump(d / "test.txt.gz", TEST, compress=False)             # plain under a .gz name
    train, test = read_srgnn(d)
    assert column(train, "item") == [1, 2, 3, 4, 5, 2, 6, 2]
    assert column(test, "item") == [1, 2, 3, 7, 1]
    assert (train.stats["compression"], test.stats["compression"]) == ("gzip", "none")


def test_rebuild_of_longer_groups():
    # sessions [5, 6, 7, 5] and [9, 8]: the pairs of each run from the longest prefix down to 1
    prefixes = [[5, 6, 7], [5, 6], [5], [9]]
    labels = [5, 7, 6, 8]
    items, offsets, stats = rebuild_test_sessions(Path("t.txt"), (prefixes, labels))
    assert items.tolist() == [5, 6, 7, 5, 9, 8] and offsets.tolist() == [0, 4, 6]
    assert stats == {"sessions": 2, "prefixes": 4, "longest_session": 4}


# ---- a crafted file never runs code --------------------------------------------------------------
class Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


@pytest.mark.parametrize("where", ["train", "test"])
def test_crafted_pickle_is_refused_and_not_run(tmp_path, where):
    marker = tmp_path / "pwned"
    payload = Payload(f"touch {marker}")
    # plain pickle.load of this file would create the marker
    train = [[1, 2], payload] if where == "train" else TRAIN
    test = ([[1], payload], [2, 3]) if where == "test" else TEST
    d = folder(tmp_path, train, test)
    name = "all_train_seq.txt.gz" if where == "train" else "test.txt.gz"
    with pytest.raises(InputError) as e:
        read_srgnn(d)
    msg = str(e.value)
    assert str(d / name) in msg and "refused to load class" in msg
    assert f"{os.system.__module__}.system" in msg          # posix.system on Linux
    assert not marker.exists()


def test_any_class_is_refused(tmp_path):
    path = dump(tmp_path / "x.txt", [collections.OrderedDict(a=1)])
    with pytest.raises(InputError, match=r"refused to load class collections\.OrderedDict"):
        load_pickle(path)


# ---- malformed files: the file and the first bad position --------------------------------------
@pytest.mark.parametrize("train, expected", [
    ({1: 2}, "sessions: expected a list of sessions (lists of item ids), found dict"),
    ([], "sessions: is empty"),
    ([[1, 2], 3], "sessions[1]: expected a list of item ids, found int 3"),
    ([[1, 2], []], "sessions[1]: is an empty list"),
    ([[1, 2], [3, "4"]], "sessions[1][1]: expected an item id (an int >= 1), found str '4'"),
    ([[1, 2], [3, 4.0]], "sessions[1][1]: expected an item id (an int >= 1), found float 4.0"),
    ([[1, True]], "sessions[0][1]: expected an item id (an int >= 1), found bool True"),
    ([[1, 2], [3, 0, -1]], "sessions[1][1]: item id 0 is out of range"),
    ([[1, 2], [2 ** 70]], f"sessions[1][0]: item id {2 ** 70} is out of range"),
])
def test_malformed_train_file(tmp_path, train, expected):
    d = folder(tmp_path, train=train)
    with pytest.raises(InputError) as e:
        read_srgnn(d)
    assert str(e.value).startswith(f"{d / 'all_train_seq.txt.gz'}: ")
    assert expected in str(e.value)


@pytest.mark.parametrize("test, expected", [
    ([[[1]], [2], [3]], "expected a pair (prefixes, labels), found list of length 3"),
    ("abc", "expected a pair (prefixes, labels), found str 'abc'"),
    (([[1, 2], [1]], [3]), "2 prefixes but 1 labels"),
    (([[1, 2], [1]], "32"), "labels (the second element): expected a list of item ids, found str"),
    (([[1, 2], [1]], [3, "2"]), "labels[1]: expected an item id"),
    (([[1]], [0]), "labels[0]: item id 0 is out of range"),
    (([], []), "prefixes: is empty"),
    (([[1, 2], [1, "x"]], [3, 2]), "prefixes[1][1]: expected an item id"),
    # a label that disagrees with its group's session [1, 2, 3]
    (([[1, 2], [1]], [3, 5]), "pair 1 ([1] -> 5) does not agree with the session of its group "
                              "(pairs 0..1, session [1, 2, 3]): expected [1] -> 2"),
    # a prefix that disagrees with it
    (([[7], [1, 2], [9]], [1, 3, 2]), "pair 2 ([9] -> 2) does not agree with the session of its group "
                                      "(pairs 1..2, session [1, 2, 3]): expected [1] -> 2"),
    # lengths must fall by one inside a group, down to 1
    (([[1, 2], [1, 2]], [3, 3]), "pair 1: prefix of length 2, expected length 1"),
    (([[1], [1, 2, 3], [1]], [2, 4, 2]), "pair 2: prefix of length 1, expected length 2"),
    (([[1, 2, 3], [1, 2]], [4, 3]), "pair 1: the last group ends with a prefix of length 2"),
])
def test_malformed_test_file(tmp_path, test, expected):
    d = folder(tmp_path, test=test)
    with pytest.raises(InputError) as e:
        read_srgnn(d)
    assert str(e.value).startswith(f"{d / 'test.txt.gz'}: ")
    assert expected in str(e.value)


def test_not_a_pickle_and_broken_gzip(tmp_path):
    d = folder(tmp_path)
    (d / "all_train_seq.txt.gz").write_text("session_id;item_id\n1;2\n")
    with pytest.raises(InputError, match=r"all_train_seq\.txt\.gz: not a valid Python pickle"):
        read_srgnn(d)
    (d / "all_train_seq.txt.gz").write_bytes(gzip.compress(pickle.dumps(TRAIN, protocol=2))[:30])
    with pytest.raises(InputError, match=r"all_train_seq\.txt\.gz: cannot read it as a gzip-compressed "
                                         r"pickle \(EOFError"):
        read_srgnn(d)


def test_folder_checks(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        read_srgnn(tmp_path / "nope")
    d = folder(tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        read_srgnn(d / "test.txt.gz")
    dump(d / "test.txt", TEST)
    with pytest.raises(InputError, match="has both test.txt and test.txt.gz; keep one of them"):
        read_srgnn(d)
    (d / "test.txt").unlink()
    (d / "test.txt.gz").unlink()
    with pytest.raises(InputError, match="has no test.txt or test.txt.gz"):
        read_srgnn(d)


# ---- import and build through the CLI -----------------------------------------------------------
def tiny_folder(tmp_path: Path) -> Path:
    """20 train sessions of 3 items over items 1..8, 3 test sessions (one with the unseen item 99)."""
    train = [[1 + i % 8, 1 + (i + 1) % 8, 1 + (i + 3) % 8] for i in range(20)]
    sessions = [[1, 2, 3, 4], [5, 5], [99, 2, 3]]
    prefixes, labels = [], []
    for s in sessions:
        for n in range(len(s) - 1, 0, -1):
            prefixes.append(s[:n])
            labels.append(s[n])
    return folder(tmp_path, train, (prefixes, labels))


def manifest(ws, name: str) -> dict:
    return json.loads(ws.dataset(name).manifest.read_text())


def test_cli_import_builds_and_keeps_the_test_set(tmp_path, workspace, capsys):
    from engine.data.artifacts import load_dataset
    from engine.data.examples import make_examples
    from engine.data.sessions import Sessions
    d = tiny_folder(tmp_path)
    root = str(workspace.root)
    assert cli(["--workspace", root, "-q", "data", "import", str(d), "--format", "srgnn", "--name", "b"]) == 0
    m = manifest(workspace, "b")
    assert m["source"]["path"] == str(d.resolve()) and m["source"]["test_path"] is None
    cfg = DataConfig.from_dict(m["config"])
    assert {k: getattr(cfg, k) for k in SRGNN_DATA_DEFAULTS} == SRGNN_DATA_DEFAULTS
    assert SRGNN_DATA_DEFAULTS is SPECS_DEFAULTS and cfg.has_session_ids
    assert set(m["stages"]["ingest"]["inputs"]) == {"train", "test"}
    data = load_dataset(workspace, "b")
    # validation = the latest 10% of the 20 train sessions; test = the 3 published sessions
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 3)
    raw = Sessions.read(data.paths.split_sessions("test"))
    assert [raw.items[a:b].tolist() for a, b in zip(raw.offsets[:-1], raw.offsets[1:])] == \
        [[1, 2, 3, 4], [5, 5], [99, 2, 3]]
    ex = make_examples(data.test, "prefixes")
    assert len(ex) == 6           # 3 + 1 + 2 pairs in the pickle
    targets = data.test.items[data.test.offsets[ex[:, 0]] + ex[:, 1]]
    # 99 is unseen in train: index 0 inside the prefix [99] and [99, 2]; never a target here
    assert data.test.items[data.test.offsets[2]] == 0 and (targets > 0).all()

    # status names the folder; a changed file makes ingest stale and a rebuild reruns it
    capsys.readouterr()
    assert cli(["--workspace", root, "data", "status", "b"]) == 0
    assert "dataset b (srgnn folder:" in capsys.readouterr().out
    from engine.data.report import dataset_report
    rep = dataset_report(workspace, "b")
    assert (rep.source, rep.source_kind, rep.fully_built) == (str(d.resolve()), "folder", True)
    assert rep.stages[0].note == "60 events, 8 items; test file 9 events"
    dump(d / "test.txt.gz", ([[1, 2], [1]], [3, 2]), compress=True)
    from engine.data.manifest import Dataset
    from engine.data.pipeline import status
    assert {s.name: s.state for s in status(Dataset.load(workspace, "b"))}["ingest"] == "stale"
    assert cli(["--workspace", root, "-q", "data", "build", "b", "--val-ratio", "0.2"]) == 0
    data = load_dataset(workspace, "b")
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 1)


def test_cli_import_refusals(tmp_path, workspace, capsys):
    d = tiny_folder(tmp_path)
    root = str(workspace.root)
    assert cli(["--workspace", root, "data", "import", str(d), "--format", "srgnn", "--name", "b",
                "--test-file", str(d / "test.txt.gz")]) == 2
    assert "takes no test file" in capsys.readouterr().err
    assert cli(["--workspace", root, "data", "import", str(d), "--format", "rsc15", "--name", "b"]) == 2
    assert "is a directory, not a regular file" in capsys.readouterr().err
    assert cli(["--workspace", root, "data", "import", str(d / "test.txt.gz"), "--format", "srgnn",
                "--name", "b"]) == 2
    assert "is not a folder; format srgnn expects an SR-GNN folder" in capsys.readouterr().err
    assert workspace.dataset_names() == []


def test_import_dialog_accepts_an_srgnn_folder(tmp_path):
    pytest.importorskip("textual")
    from tui.dialogs.datasets import check_import
    d = tiny_folder(tmp_path)
    vals, err = check_import(str(d), "srgnn", "b", "", [])
    assert err == "" and vals == {"path": str(d.resolve()), "format": "srgnn", "name": "b", "test": None}
    vals, err = check_import(str(d), "srgnn", "b", str(d / "test.txt.gz"), [])
    assert vals is None and err.startswith("test file: format srgnn takes none")
    vals, err = check_import(str(tmp_path), "srgnn", "b", "", [])
    assert vals is None and "has no all_train_seq.txt or all_train_seq.txt.gz" in err
    vals, err = check_import(str(d), "rsc15", "b", "", [])
    assert vals is None and err.endswith("is not a file (only format srgnn takes a folder)")


# ---- the real benchmarks (../shared/data/srgnn) -------------------------------------------------
REAL = {  # train sessions, train events, items in train, test sessions, test prefixes, unseen targets
    "diginetica": (186_670, 906_140, 43_097, 15_963, 60_858, 0),
    "yoochoose1_64": (116_167, 486_026, 17_376, 15_324, 55_898, 412),
}


def real_folder(name: str) -> Path:
    d = SHARED_DATA / "srgnn" / name
    if not d.is_dir():
        pytest.skip(f"SR-GNN folder {d} not present")
    return d


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(REAL))
def test_real_benchmarks_read_exactly(name):
    n_train, n_events, n_items, n_test, n_pairs, n_unseen = REAL[name]
    train, test = read_srgnn(real_folder(name))
    assert train.stats["sessions"] == n_train and train.stats["rows_read"] == n_events
    assert train.stats["prefixes"] == n_events - n_train
    assert test.stats["sessions"] == n_test and test.stats["prefixes"] == n_pairs
    train_items = np.unique(train.table.column("item").to_numpy())
    assert len(train_items) == n_items
    # every pair of the pickle comes back from the rebuilt sessions (prefixes = events - sessions)
    assert test.table.num_rows - n_test == n_pairs
    _, labels = load_pickle(real_folder(name) / "test.txt.gz")
    assert int((~np.isin(labels, train_items)).sum()) == n_unseen
    # longest sessions stay under the default cut (nothing is truncated)
    assert max(train.stats["longest_session"], test.stats["longest_session"]) < \
        SRGNN_DATA_DEFAULTS["max_session_length"]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_yoochoose_build_keeps_the_test_pairs(tmp_path, workspace):
    """The whole pipeline on yoochoose1_64 (about 5 s): the test examples are the pickle's pairs."""
    from engine.data.artifacts import load_dataset
    from engine.data.examples import make_examples
    from engine.data.sessions import Sessions
    d = real_folder("yoochoose1_64")
    assert cli(["--workspace", str(workspace.root), "-q", "data", "import", str(d), "--format", "srgnn",
                "--name", "yc"]) == 0
    data = load_dataset(workspace, "yc")
    raw = Sessions.read(data.paths.split_sessions("test"))
    ex = make_examples(data.test, "prefixes")
    assert len(ex) == 55_898 and len(data.train) + len(data.val) == 116_167
    # the same (prefix, target) pairs as the pickle, as a multiset, in raw ids
    built = collections.Counter(
        (tuple(raw.items[raw.offsets[s]:raw.offsets[s] + n].tolist()), int(raw.items[raw.offsets[s] + n]))
        for s, n in ex)
    prefixes, labels = load_pickle(d / "test.txt.gz")
    assert built == collections.Counter((tuple(p), t) for p, t in zip(prefixes, labels))
    # targets unseen in the train split are index 0 (misses for the evaluator): the 412 unseen in
    # all_train_seq plus those seen only in the validation share (measured: 470 in all)
    targets = data.test.items[data.test.offsets[ex[:, 0]] + ex[:, 1]]
    assert 412 <= int((targets == 0).sum()) <= 500
