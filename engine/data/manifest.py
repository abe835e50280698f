"""A dataset's folder and manifest: source, config, and per-stage records (key, stats, timing).

    datasets/<name>/manifest.json
    datasets/<name>/source/            (demo datasets: the generated events.csv and truth.npz)
    datasets/<name>/<stage>/...        (one folder per stage, swapped in atomically)
"""

from __future__ import annotations

import hashlib
import json
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import atomic
from engine.core.config import DataConfig, from_dict, to_dict
from engine.core.errors import InputError, StageError, StorageError
from engine.core.locks import FolderLock, lock_holder
from engine.core.workspace import DatasetDir, Workspace

MANIFEST_VERSION = 1
QUICK_SPAN = 64 << 10   # bytes hashed at each end of an output file by `quick_check`


def file_fingerprint(path: Path, cached: dict | None = None) -> dict:
    """Size, mtime and a blake2b content hash; reuse `cached` when size and mtime are unchanged."""
    st = path.stat()
    if cached and cached.get("bytes") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns \
            and cached.get("blake2b"):
        return dict(cached)
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b": h.hexdigest()}


def quick_check(path: Path, size: int) -> str:
    """blake2b of the size and the first and last 64 KiB of a file.

    Two small reads, so `data status` can check every artifact on every call; it catches truncation,
    appends and rewrites of either end (a change confined to the middle of a file larger than
    128 KiB goes unnoticed: the price of not hashing gigabytes on every status).
    """
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(QUICK_SPAN))
        if size > QUICK_SPAN:
            f.seek(max(QUICK_SPAN, size - QUICK_SPAN))
            h.update(f.read(QUICK_SPAN))
    return h.hexdigest()


def output_record(path: Path) -> dict:
    """What the manifest records of one stage output file: its size and `quick_check`."""
    size = path.stat().st_size
    return {"bytes": size, "quick_blake2b": quick_check(path, size)}


def output_problem(path: Path, rec: dict, label: str) -> str | None:
    """Why the file at `path` no longer matches its record `rec` (None if it does); `label` names it.

    Records written before the content check have only `bytes`: those get the size check only.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{label} is missing"
    if not stat.S_ISREG(st.st_mode):
        return f"{label} is not a regular file"
    want = rec.get("bytes")
    if want is not None and st.st_size != want:
        return f"{label} changed on disk ({st.st_size:,} bytes, built with {want:,})"
    check = rec.get("quick_blake2b")
    if check and quick_check(path, st.st_size) != check:
        return f"{label} changed on disk (same size, different content)"
    return None


@dataclass
class Dataset:
    """One dataset of a workspace, with its manifest loaded in `self.data`."""

    ws: Workspace
    name: str
    data: dict[str, Any]

    @property
    def paths(self) -> DatasetDir:
        return self.ws.dataset(self.name)

    @property
    def dir(self) -> Path:
        return self.paths.root

    @property
    def manifest_path(self) -> Path:
        return self.paths.manifest

    @property
    def config(self) -> DataConfig:
        return from_dict(DataConfig, self.data["config"])

    @property
    def source(self) -> dict[str, Any]:
        return self.data["source"]

    @property
    def is_demo(self) -> bool:
        return bool(self.source.get("demo"))

    def source_file(self, role: str = "path") -> Path | None:
        """The source (`path`), test file (`test_path`) or an appended chunk (`chunk-N`, from 1);
        files inside the dataset folder are stored relative to it, so a workspace can be moved or
        copied."""
        if role.startswith("chunk-"):
            chunks = self.source.get("chunks") or []
            n = int(role[6:])
            p = chunks[n - 1]["path"] if 1 <= n <= len(chunks) else None
        else:
            p = self.source.get(role)
        if not p:
            return None
        path = Path(p)
        return path if path.is_absolute() else self.dir / path

    def stage_dir(self, stage: str) -> Path:
        return self.paths.stage_dir(stage)

    # ---- item metadata (`sessrec data items`) ---------------------------------------------------
    @property
    def has_items(self) -> bool:
        return bool((self.source.get("items") or {}).get("paths"))

    def item_files(self) -> list[Path]:
        """The attached item files, in order (later files' values win)."""
        return [p if p.is_absolute() else self.dir / p
                for p in (Path(x) for x in (self.source.get("items") or {}).get("paths", []))]

    @property
    def item_columns(self) -> dict[str, str] | None:
        return (self.source.get("items") or {}).get("columns")

    def attach_items(self, paths: list[Path], columns: dict[str, str] | None) -> None:
        """Record the item files (stored like the log: relative inside the dataset folder) and the
        item table's columns; the `metadata` stage reads them."""
        self.data["source"]["items"] = {"paths": [self.stored_path(p) for p in paths], "columns": columns}
        self.save()

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.data.get("stages", {}).get(stage)

    # ---- persistence ---------------------------------------------------------------------------
    def stored_path(self, p: Path) -> str:
        """How the manifest names a source file: relative to the dataset folder when inside it."""
        p = Path(p).resolve()
        try:
            return str(p.relative_to(self.dir.resolve()))
        except ValueError:
            return str(p)

    def append_chunk(self, path: Path, fmt: str) -> bool:
        """Record a newer chunk of the log (read with the main log by ingest). False when that file
        is already part of the dataset (an append run again changes nothing)."""
        from engine.core.schema import DataFormat
        if self.config.format == DataFormat.SRGNN:
            raise InputError(f"dataset {self.name!r} is an SR-GNN benchmark (no times): it takes no appended chunks")
        path = Path(path).resolve()
        roles = ["path", "test_path", *(f"chunk-{i}" for i in range(1, len(self.source.get("chunks") or []) + 1))]
        for role in roles:
            cur = self.source_file(role)
            if cur is not None and cur.resolve() == path:
                if role == "path" or role == "test_path":
                    raise InputError(f"{path} is the dataset's own {'log' if role == 'path' else 'test file'}")
                return False
        self.data["source"].setdefault("chunks", []).append(
            {"path": self.stored_path(path), "format": str(fmt), "added": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.save()
        return True

    @classmethod
    def create(cls, ws: Workspace, name: str, source_path: Path, cfg: DataConfig,
               test_path: Path | None = None, demo: dict | None = None,
               overwrite: bool = False) -> "Dataset":
        d = ws.dataset(name).root

        def stored(p: Path | None) -> str | None:
            if p is None:
                return None
            p = Path(p).resolve()
            try:
                return str(p.relative_to(d.resolve()))
            except ValueError:
                return str(p)
        if ws.dataset(name).exists and not overwrite:
            existing = cls.load(ws, name)
            def same_file(role: str, p: Path | None) -> bool:
                cur = existing.source_file(role)
                return (cur is None and p is None) or (cur is not None and p is not None
                                                       and cur.resolve() == Path(p).resolve())
            same = same_file("path", source_path) and same_file("test_path", test_path)
            if not same:
                raise InputError(f"dataset {name!r} already exists with source "
                                 f"{existing.source.get('path')}; choose another --name or delete it "
                                 f"(sessrec data delete {name})")
            existing.data["config"] = to_dict(cfg)
            if demo:
                existing.data["source"]["demo"] = demo
            existing.save()
            return existing
        data = {
            "version": MANIFEST_VERSION,
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": {"path": stored(source_path), "format": cfg.format,
                       "test_path": stored(test_path), "demo": demo},
            "config": to_dict(cfg),
            "stages": {},
        }
        ds = cls(ws, name, data)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError("dataset folder", d, e) from e
        ds.save()
        return ds

    @classmethod
    def load(cls, ws: Workspace, name: str) -> "Dataset":
        path = ws.dataset(name).manifest
        if not path.exists():
            known = ws.dataset_names()
            hint = f"known datasets: {', '.join(known)}" if known else \
                "no datasets yet: run `sessrec demo` or `sessrec data import PATH --format F --name N`"
            raise InputError(f"dataset {name!r} not found in {ws.datasets_dir} ({hint})")
        data = read_manifest(path)
        ds = cls(ws, name, data)
        # finish or undo any stage swap that was interrupted, drop temp leftovers
        for stage in data.get("stages", {}):
            atomic.recover_dir(ds.stage_dir(stage))
        return ds

    def save(self) -> None:
        atomic.write_json(self.manifest_path, self.data, "dataset manifest")

    def record(self, stage: str, rec: dict[str, Any]) -> None:
        self.data.setdefault("stages", {})[stage] = rec
        self.save()

    def drop_stage_records(self, stages: list[str]) -> None:
        for s in stages:
            self.data.get("stages", {}).pop(s, None)
        self.save()


# manifest fields that are checked on load: dotted key -> (type, required)
_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "source": (dict, True), "config": (dict, True), "stages": (dict, True),
    "source.path": (str, True), "source.format": ((str, type(None)), False),
    "source.test_path": ((str, type(None)), False), "source.demo": ((dict, type(None)), False),
    "source.items": ((dict, type(None)), False),
    "source.chunks": ((list, type(None)), False),
    "building": ((dict, type(None)), False),
}
# fields of each stage record
_STAGE_FIELDS: dict[str, type] = {"status": str, "key": str, "outputs": dict, "stats": dict,
                                  "inputs": dict}


def _json_type(v: Any) -> str:
    for t, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string"),
                    ((int, float), "a number")):
        if isinstance(v, t):
            return name
    return "null"


def _type_name(t: type | tuple[type, ...]) -> str:
    first = t[0] if isinstance(t, tuple) else t
    return {dict: "an object", str: "a string"}[first]


def read_manifest(path: Path) -> dict[str, Any]:
    """A dataset's manifest, checked for the keys and types the pipeline relies on.

    Anything else is one InputError naming the file and what was expected (never a KeyError later).
    """
    fix = f"delete the dataset (sessrec data delete {path.parent.name}) and import it again"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):   # opening a FIFO would hang
            raise InputError(f"{path}: is not a regular file; expected a dataset manifest (JSON)")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with keys source, config and stages, "
                         f"found {_json_type(data)}; {fix}")
    missing = [k for k in ("source", "config", "stages") if k not in data]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}; expected a sessrec dataset "
                         f"manifest with source, config and stages; {fix}")
    for key, (typ, required) in _FIELDS.items():
        parent, _, leaf = key.rpartition(".")
        holder = data[parent] if parent else data
        if leaf not in holder:
            if required:
                raise InputError(f"{path}: missing key {key!r}; {fix}")
            continue
        if not isinstance(holder[leaf], typ):
            raise InputError(f"{path}: {key!r} is {_json_type(holder[leaf])}; expected "
                             f"{_type_name(typ)}; {fix}")
    for stage, rec in data["stages"].items():
        if not isinstance(rec, dict):
            raise InputError(f"{path}: 'stages.{stage}' is {_json_type(rec)}; expected an object; {fix}")
        for key, typ in _STAGE_FIELDS.items():
            if key in rec and not isinstance(rec[key], typ):
                raise InputError(f"{path}: 'stages.{stage}.{key}' is {_json_type(rec[key])}; expected "
                                 f"{_type_name(typ)}; {fix}")
    try:
        from_dict(DataConfig, data["config"])
    except (InputError, TypeError) as e:
        raise InputError(f"{path}: 'config': {e}; {fix}") from None
    return data


class BuildLock(FolderLock):
    """Held while a build runs: another build (or a delete) of the dataset gets a clear error."""

    def __init__(self, ds: Dataset) -> None:
        super().__init__(ds.paths.build_lock, f"dataset {ds.name!r} is being built by {{who}}; "
                                              f"wait for it or stop it", "build lock", StageError)


def refuse_if_in_use(ws: Workspace, name: str, doing: str) -> None:
    """The one rule for changing a dataset's artifacts (`data delete`, a build that reruns a stage):
    StageError naming every live training on it, which reads them (now, or at its evaluation: a
    rebuilt item index fails its `eval`)."""
    from engine.runs.store import RunStore
    live = RunStore(ws).live(name)
    if live:
        who = ", ".join(f"{run_id} (process {pid or '?'})" for run_id, pid in live)
        raise StageError(f"cannot {doing}: dataset {name!r} is used by a running training: {who}; stop it "
                         f"first (ctrl+t on the Train screen, or kill the process)")


def building_pid(ds: Dataset) -> int | None:
    """PID of the live process building `ds` (0 when it cannot be read), or None."""
    return lock_holder(ds.paths.build_lock)
