"""Atomic file and folder writes: write next to the target, then rename into place.

A crash or Ctrl-C at any point leaves either the old file/folder or the new one, never a partial one,
and never a stray temp file (temp names start with `.tmp-` and are removed on failure). OS errors in
writing (disk full, ...) are raised as `StorageError`, one line naming what was written and where.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from engine.core.errors import InputError, StorageError

TMP_PREFIX = ".tmp-"


def _read_umask() -> int:
    """The process's umask, without changing it where Linux can tell (/proc); elsewhere by setting
    and restoring it (a restrictive value in between, as the umask is process-wide)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


# mkstemp makes 0600 files and mkdtemp 0700 folders; what is renamed into place gets the modes a
# plain open()/mkdir() would have given instead. Read once: the umask rarely changes in a process.
UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, what: str = "file") -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it onto `target`.

    An OSError (disk full, file too large, read-only folder, ...) while making the temp file, inside
    the block or in the rename becomes a StorageError naming `what` and `target`; the temp file is
    removed on any failure.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent)
    except OSError as e:
        raise StorageError(what, target, e) from e
    tmp_path = Path(tmp)
    try:
        try:
            os.fchmod(fd, 0o666 & ~UMASK)
        finally:
            os.close(fd)
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as e:
        _unlink_quietly(tmp_path)
        raise StorageError(what, target, e) from e
    except BaseException:
        _unlink_quietly(tmp_path)
        raise


def _unlink_quietly(path: Path) -> None:
    # clean-up must not replace the error being raised (a full or read-only disk can refuse it too)
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike, data: bytes, what: str = "file") -> None:
    with atomic_path(target, what) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str, what: str = "file") -> None:
    write_bytes(target, text.encode(), what)


def write_json(target: str | os.PathLike, obj: Any, what: str = "file") -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", what)


def write_npz(target: str | os.PathLike, arrays: dict[str, Any], what: str = "file") -> None:
    """numpy arrays as an .npz file, atomically (no pickles)."""
    import numpy as np
    with atomic_path(target, what) as tmp:
        with open(tmp, "wb") as f:          # a file object: np.savez would append ".npz" to the temp name
            np.savez(f, **arrays)


def read_npz(path: str | os.PathLike, version: int, what: str, fix: str) -> dict[str, Any]:
    """The arrays of an .npz file written with `format_version` = `version` (no pickles); InputError
    naming the file, `what` it should be and how to `fix` it otherwise."""
    import zipfile

    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as z:
            found = int(z["format_version"])
            if found != version:
                raise InputError(f"{path}: {what} format {found}, expected {version}; {fix}")
            return {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a {what} file ({e})") from e


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays show up in stats dicts
    if hasattr(o, "item") and callable(o.item):
        try:
            return o.item()
        except (ValueError, TypeError):
            pass
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Yield a fresh temp folder beside `target`; on success swap it in place of `target`.

    The old folder is renamed aside, the new one renamed in, then the old one removed; if the swap
    is interrupted between the two renames, `recover_dir` puts the old folder back. An OSError in
    making the temp folder or in the swap becomes a StorageError naming `what` and `target`; one
    raised inside the block passes through as it is (the block may read as well as write).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent))
    except OSError as e:
        raise StorageError(what, target, e) from e
    try:
        os.chmod(tmp, 0o777 & ~UMASK)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(what, target, e) from e
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f"{TMP_PREFIX}{target.name}.old"
    try:
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            recover_dir(target)          # put the old folder back if it was moved aside
        raise StorageError(what, target, e) from e
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: str | os.PathLike) -> None:
    """Undo an interrupted `atomic_dir` swap and delete stray temp files/folders beside `target`."""
    target = Path(target)
    old = target.parent / f"{TMP_PREFIX}{target.name}.old"
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)


def clean_temp(folder: str | os.PathLike) -> list[Path]:
    """Remove leftovers of interrupted writes in `folder` (after `recover_dir`); return them."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(TMP_PREFIX) and not p.name.endswith(".old"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# ---- appends: whole lines, each on a fresh line ---------------------------------------------------
class LineAppender:
    """Appends lines to a file (a JSON-lines log) so that each starts on a fresh line.

    A write cut short (a full disk, a crash) leaves a torn last line; appending straight after it
    would glue the next line onto it and lose both. So before the first append, and after any failed
    one, the file's last byte is read: if it is not a newline, one is written first, which closes
    the torn line (the reader skips and counts it) and keeps the next line whole. One process
    appends to a file at a time (the run lock), so between appends the end of the file is known.
    """

    def __init__(self, path: str | os.PathLike, what: str = "file") -> None:
        self.path, self.what = Path(path), what
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise StorageError(what, self.path, e) from e
        self._clean_end = False          # unknown until checked: the file may end in a torn line

    def append(self, line: str) -> None:
        """Write `line` (without its newline) as one whole line; StorageError if the disk refuses."""
        data = line.encode() + b"\n"
        try:
            if not self._clean_end:
                size = os.fstat(self._fd).st_size
                if size and os.pread(self._fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
            self._clean_end = False
            view = memoryview(data)
            while view:                  # os.write may write part of it (a nearly full disk)
                view = view[os.write(self._fd, view):]
            self._clean_end = True
        except OSError as e:
            raise StorageError(self.what, self.path, e) from e

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
