"""RetailRocket fetch: existing file, manual instructions, credentials, a faked kaggle download.

Nothing here touches the network: the network check and subprocess.run are replaced.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.core.errors import InputError
from engine.data import fetch

EVENTS = ("timestamp,visitorid,event,itemid,transactionid\n"
          "1433221332117,257597,view,355908,\n"
          "1433223236124,599528,transaction,356475,4000\n")
# the real functions, kept before the autouse fixture replaces them
NETWORK_OK, KAGGLE_COMMAND = fetch.network_ok, fetch.kaggle_command


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No real credentials, no real network, no real kaggle, a fresh home folder."""
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR",
                "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*a, **k):
        raise AssertionError("the network must not be touched")

    monkeypatch.setattr(fetch, "network_ok", no_network)
    monkeypatch.setattr(fetch.subprocess, "run", no_network)
    monkeypatch.setattr(fetch, "kaggle_command", lambda: None)


@pytest.fixture
def ready(monkeypatch):
    """kaggle installed, credentials present, network up; returns the list of commands run."""
    monkeypatch.setattr(fetch, "kaggle_command", lambda: ["kaggle"])
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    monkeypatch.setattr(fetch, "network_ok", lambda host, port, timeout_s: True)
    return []


def fake_kaggle(monkeypatch, calls, write=None, returncode=0, stderr=""):
    """Replace subprocess.run with a kaggle that calls `write(download_folder)`."""
    def run(args, **kwargs):
        calls.append((args, kwargs))
        if write is not None:
            write(Path(args[args.index("-p") + 1]))
        return subprocess.CompletedProcess(args, returncode, stdout="", stderr=stderr)

    monkeypatch.setattr(fetch.subprocess, "run", run)


def assert_instructions(msg: str, target: Path) -> None:
    assert "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset" in msg
    assert "events.csv (~94 MB, 2,756,101 rows)" in msg
    assert f"Put it at {target}" in msg
    assert f"sessrec data import {target} --format retailrocket --name retailrocket" in msg
    assert "~/.kaggle/kaggle.json" in msg and "KAGGLE_USERNAME" in msg and "KAGGLE_KEY" in msg


def test_existing_file_is_returned_without_network(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS)
    assert fetch.fetch_retailrocket(tmp_path) == tmp_path / "events.csv"


def test_without_kaggle_gives_manual_instructions(tmp_path):
    dest = tmp_path / "downloads" / "retailrocket"
    with pytest.raises(InputError) as e:
        fetch.fetch_retailrocket(dest)
    msg = str(e.value)
    assert "neither the kaggle CLI nor its Python package is installed" in msg
    assert_instructions(msg, dest / "events.csv")


def test_without_credentials_gives_manual_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "kaggle_command", lambda: ["kaggle"])
    with pytest.raises(InputError) as e:
        fetch.fetch_retailrocket(tmp_path)
    assert "no Kaggle API credentials" in str(e.value)
    assert_instructions(str(e.value), tmp_path / "events.csv")


def test_without_network_never_runs_kaggle(tmp_path, monkeypatch, ready):
    seen = []
    monkeypatch.setattr(fetch, "network_ok", lambda host, port, timeout_s: seen.append(
        (host, port, timeout_s)) or False)
    with pytest.raises(InputError) as e:
        fetch.fetch_retailrocket(tmp_path, timeout_s=0.5)
    assert seen == [("www.kaggle.com", 443, 0.5)]
    assert "www.kaggle.com:443 cannot be reached within 0.5 s" in str(e.value)
    assert_instructions(str(e.value), tmp_path / "events.csv")


@pytest.mark.parametrize("setup", ["env", "token", "home_json", "config_dir", "xdg"])
def test_credential_sources(tmp_path, monkeypatch, setup):
    home = tmp_path / "home"
    assert not fetch.has_credentials()
    if setup == "env":
        monkeypatch.setenv("KAGGLE_USERNAME", "u")
        assert not fetch.has_credentials()  # the key is needed too
        monkeypatch.setenv("KAGGLE_KEY", "k")
    elif setup == "token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_x")
    else:
        folder = {"home_json": home / ".kaggle", "config_dir": tmp_path / "cfg",
                  "xdg": tmp_path / "xdg" / "kaggle"}[setup]
        folder.mkdir(parents=True)
        (folder / "kaggle.json").write_text('{"username": "u", "key": "k"}')
        if setup == "config_dir":
            monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(folder))
        if setup == "xdg":
            monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert fetch.has_credentials()


def test_download_zip_is_unpacked_atomically(tmp_path, monkeypatch, ready):
    def write(folder: Path) -> None:
        with zipfile.ZipFile(folder / "events.csv.zip", "w") as z:
            z.writestr("events.csv", EVENTS)

    fake_kaggle(monkeypatch, ready, write)
    dest = tmp_path / "dl"
    progress = []
    path = fetch.fetch_retailrocket(dest, progress=progress.append)
    assert path == dest / "events.csv" and path.read_text() == EVENTS
    assert sorted(p.name for p in dest.iterdir()) == ["events.csv"]  # no temp leftovers
    (args, kwargs), = ready
    assert args[:7] == ["kaggle", "datasets", "download", "-d", "retailrocket/ecommerce-dataset",
                        "-f", "events.csv"]
    assert args[7] == "-p" and Path(args[8]).parent == dest
    assert kwargs["timeout"] == fetch.DOWNLOAD_TIMEOUT_S
    assert {p.stage for p in progress} == {"fetch"} and progress[-1].done == 2


def test_download_plain_csv(tmp_path, monkeypatch, ready):
    fake_kaggle(monkeypatch, ready, lambda folder: (folder / "events.csv").write_text(EVENTS))
    dest = tmp_path / "dl"
    assert fetch.fetch_retailrocket(dest).read_text() == EVENTS
    assert sorted(p.name for p in dest.iterdir()) == ["events.csv"]


def test_download_timeout(tmp_path, monkeypatch, ready):
    def run(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(fetch.subprocess, "run", run)
    dest = tmp_path / "dl"
    with pytest.raises(InputError, match="did not finish within 7 s"):
        fetch.fetch_retailrocket(dest, download_timeout_s=7)
    assert list(dest.iterdir()) == []


def test_download_failure_shows_kaggle_output(tmp_path, monkeypatch, ready):
    fake_kaggle(monkeypatch, ready, returncode=1, stderr="403 - Forbidden\n")
    with pytest.raises(InputError) as e:
        fetch.fetch_retailrocket(tmp_path / "dl")
    assert "exited with 1: 403 - Forbidden" in str(e.value)
    assert_instructions(str(e.value), tmp_path / "dl" / "events.csv")


@pytest.mark.parametrize("name,content", [("events.csv", "a,b\n1,2\n"), ("other.csv", EVENTS)])
def test_download_with_wrong_content_leaves_nothing(tmp_path, monkeypatch, ready, name, content):
    fake_kaggle(monkeypatch, ready, lambda folder: (folder / name).write_text(content))
    dest = tmp_path / "dl"
    with pytest.raises(InputError, match="not RetailRocket events|held no events.csv"):
        fetch.fetch_retailrocket(dest)
    assert list(dest.iterdir()) == []


def test_network_ok_on_loopback_only():
    # the real check, pointed at this machine only
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert NETWORK_OK("127.0.0.1", port, 1.0)
    assert not NETWORK_OK("127.0.0.1", port, 1.0)  # closed now: refused at once


def test_kaggle_command(monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: "/opt/bin/kaggle")
    assert KAGGLE_COMMAND() == ["/opt/bin/kaggle"]
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    monkeypatch.setattr(fetch.importlib.util, "find_spec", lambda name: None)
    assert KAGGLE_COMMAND() is None
    monkeypatch.setattr(fetch.importlib.util, "find_spec", lambda name: object())
    cmd = KAGGLE_COMMAND()
    assert cmd[:2] == [sys.executable, "-c"] and "kaggle.cli" in cmd[2]


def test_instructions_name_the_workspace_when_given(tmp_path, monkeypatch):
    from engine.data import fetch
    monkeypatch.setattr(fetch, "kaggle_command", lambda: None)
    ws = tmp_path / "my ws"
    with pytest.raises(InputError) as e:
        fetch.fetch_retailrocket(tmp_path / "dl", workspace=ws)
    assert f"sessrec --workspace '{ws}' data import" in str(e.value)
