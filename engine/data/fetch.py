"""`sessrec data fetch retailrocket`: download RetailRocket's events.csv from Kaggle, or say exactly how.

Kaggle needs an account and an API token, so the download works only where the `kaggle` CLI (or
Python package) and credentials are present and www.kaggle.com is reachable. Anything else ends in an
InputError that tells the user where to get the file by hand, where to put it and what to run next.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

from engine.core.atomic import TMP_PREFIX, atomic_path
from engine.core.errors import InputError
from engine.core.progress import ProgressFn, StageReporter
from engine.data.formats import detect_format

KAGGLE_DATASET = "retailrocket/ecommerce-dataset"
KAGGLE_URL = "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset"
KAGGLE_HOST, KAGGLE_PORT = "www.kaggle.com", 443
EVENTS_FILE = "events.csv"
EVENTS_SIZE = "~94 MB, 2,756,101 rows"
DOWNLOAD_TIMEOUT_S = 1800.0  # ~30 MB zipped; generous for slow links, but never unbounded
# run the kaggle package's CLI when only the package is installed (it has no __main__ module)
_KAGGLE_MODULE_CLI = "import sys; from kaggle.cli import main; sys.exit(main())"


def fetch_retailrocket(dest_dir: Path, timeout_s: float = 10.0, progress: ProgressFn | None = None,
                       download_timeout_s: float = DOWNLOAD_TIMEOUT_S, workspace: Path | None = None) -> Path:
    """Return the path of `dest_dir/events.csv`, downloading it from Kaggle if it is not there yet.

    `timeout_s` bounds the network check (connecting to www.kaggle.com:443); the download itself is
    bounded by `download_timeout_s`. Raises InputError with manual instructions when the download is
    not possible or fails; the follow-up command in them names `workspace` when given.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / EVENTS_FILE
    if target.is_file():
        return target
    command = kaggle_command()
    if command is None:
        raise InputError(manual_instructions(
            target, "neither the kaggle CLI nor its Python package is installed", workspace))
    if not has_credentials():
        raise InputError(manual_instructions(
            target, "no Kaggle API credentials were found", workspace))
    rep = StageReporter("fetch", progress, total=2)
    rep(0, message=f"checking {KAGGLE_HOST}")
    if not network_ok(KAGGLE_HOST, KAGGLE_PORT, timeout_s):
        raise InputError(manual_instructions(
            target, f"{KAGGLE_HOST}:{KAGGLE_PORT} cannot be reached within {timeout_s:g} s", workspace))
    rep(1, message=f"downloading {EVENTS_FILE} ({EVENTS_SIZE}) from {KAGGLE_DATASET}")
    _download(command, target, download_timeout_s, workspace)
    rep(2, message=f"saved {target}")
    return target


def import_command(path: Path, workspace: Path | None = None) -> str:
    """The command that turns a downloaded events.csv into a dataset."""
    ws = f" --workspace {shlex.quote(str(workspace))}" if workspace else ""
    return f"sessrec{ws} data import {shlex.quote(str(path))} --format retailrocket --name retailrocket"


def manual_instructions(target: Path, reason: str, workspace: Path | None = None) -> str:
    """What to do by hand, and how to make the automatic download work next time."""
    return "\n".join([
        f"Cannot download RetailRocket's {EVENTS_FILE} automatically: {reason}.",
        "Get it by hand:",
        f"  1. Open {KAGGLE_URL} (sign in to Kaggle; the data is free).",
        f"  2. Download the file {EVENTS_FILE} ({EVENTS_SIZE}); if it arrives as a zip, unzip it.",
        f"  3. Put it at {target}",
        f"  4. Run: {import_command(target, workspace)}",
        "Or set up automatic download:",
        "  pip install kaggle; create an API token at https://www.kaggle.com/settings (API > Create New "
        "Token) and save it as ~/.kaggle/kaggle.json (chmod 600), or put kaggle.json in the folder named "
        "by $KAGGLE_CONFIG_DIR, or set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN); "
        "then run: sessrec data fetch retailrocket",
    ])


# ---- environment checks (tests replace these) ------------------------------------------------

def kaggle_command() -> list[str] | None:
    """How to run the kaggle CLI: the `kaggle` executable, else the installed package, else None."""
    exe = shutil.which("kaggle")
    if exe:
        return [exe]
    if importlib.util.find_spec("kaggle") is not None:
        return [sys.executable, "-c", _KAGGLE_MODULE_CLI]
    return None


def has_credentials() -> bool:
    """Whether the kaggle client will find credentials (env vars or a token file)."""
    env = os.environ
    if (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")) or env.get("KAGGLE_API_TOKEN"):
        return True
    folders = [Path.home() / ".kaggle",
               Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"]
    if env.get("KAGGLE_CONFIG_DIR"):
        folders.insert(0, Path(env["KAGGLE_CONFIG_DIR"]))
    return any((d / name).is_file() for d in folders for name in ("kaggle.json", "access_token"))


def network_ok(host: str = KAGGLE_HOST, port: int = KAGGLE_PORT, timeout_s: float = 10.0) -> bool:
    """Whether a TCP connection to host:port opens within `timeout_s`.

    The probe runs in a daemon thread joined with the timeout: name resolution ignores socket
    timeouts and can hang for much longer when there is no network.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="kaggle-network-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


# ---- download --------------------------------------------------------------------------------

def _download(command: list[str], target: Path, timeout_s: float, workspace: Path | None = None) -> None:
    """Run `kaggle datasets download` into a temp folder beside `target`, unzip if needed, check the
    header, and rename into place; the temp folder is always removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}fetch-", dir=target.parent))
    try:
        args = [*command, "datasets", "download", "-d", KAGGLE_DATASET, "-f", EVENTS_FILE,
                "-p", str(work)]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise InputError(manual_instructions(
                target, f"the download did not finish within {timeout_s:g} s", workspace)) from None
        except OSError as e:
            raise InputError(manual_instructions(
                target, f"running kaggle failed: {e}", workspace)) from None
        if proc.returncode != 0:
            said = _tail(proc.stderr or proc.stdout) or "no output"
            raise InputError(manual_instructions(
                target, f"`kaggle datasets download` exited with {proc.returncode}: {said}", workspace))
        with atomic_path(target) as tmp:
            _extract(work, tmp, target, workspace)
            try:
                fmt = detect_format(tmp)
            except InputError as e:
                fmt = str(e)
            if fmt != "retailrocket":
                raise InputError(manual_instructions(
                    target, f"the downloaded file is not RetailRocket events ({fmt})", workspace))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract(work: Path, tmp: Path, target: Path, workspace: Path | None = None) -> None:
    """Move the downloaded events.csv (plain, or inside a zip) from `work` to `tmp`."""
    for path in sorted(work.rglob("*")):
        if not path.is_file():
            continue
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((m for m in z.namelist() if Path(m).name == EVENTS_FILE), None)
                if member is not None:
                    with z.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    return
        elif path.name == EVENTS_FILE:
            os.replace(path, tmp)  # same folder tree, so a rename
            return
    found = ", ".join(p.name for p in work.rglob("*")) or "nothing"
    raise InputError(manual_instructions(
        target, f"the download held no {EVENTS_FILE} (got {found})", workspace))


def _tail(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else "..." + text[-n:]
