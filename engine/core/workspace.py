"""Where datasets, runs and job logs live: every path of a workspace is a property here, nowhere else.

    <workspace>/datasets/<name>/manifest.json, source/, <stage>/...    DatasetDir
    <workspace>/runs/<run-id>/config.json, events.jsonl, best.pt, last.pt, .lock   RunDir
                              export/model.onnx                 (its ONNX export)
                              export/encoder-<device>.pt2(.json) (its compiled encoder)
    <workspace>/logs/<job-id>.json, <job-id>.log, <job-id>.threads   the app's job records
    <workspace>/settings.json                                        the app's settings (job policy)
    <workspace>/tuning/studies.db, <study>.lock                      `sessrec tune` (Optuna, SQLite)
    <workspace>/downloads/                                           `sessrec data fetch`
    <workspace>/experiments/<name>/experiment.json, impressions-*.jsonl, feedback-*.jsonl   A/B tests
    <workspace>/refresh/<dataset>/events.jsonl, .lock                `sessrec refresh` (its steps)
    <workspace>/mlruns/                                              MLflow's local store (--tracking mlflow)

The workspace is `--workspace`, else $SESSREC_HOME, else ./workspace. Stage bodies write into a
temp folder that is swapped in for the stage's folder; `DatasetDir.staging(stage, tmp)` gives the
same properties with that stage's folder pointing at the temp folder, so the file names of every
artifact are spelled once, below.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.core.errors import InputError
from engine.core.schema import Protocol, Split

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_root() -> Path:
    return Path(os.environ.get("SESSREC_HOME") or "workspace")


CACHE_ENV = "SESSREC_CACHE"


def user_cache_dir() -> Path:
    """sessrec's cache for files any workspace and process may reuse (generated code): $SESSREC_CACHE,
    else $XDG_CACHE_HOME/sessrec, else ~/.cache/sessrec."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sessrec"


def check_name(name: str, what: str = "dataset name") -> str:
    if not NAME_RE.match(name or ""):
        raise InputError(f"{what} {name!r}: use 1-64 letters, digits, '_', '-', '.' "
                         f"(starting with a letter or digit)")
    return name


def demo_dataset_name(size: str, name: str | None = None) -> str:
    """The dataset `sessrec demo --size SIZE [--name NAME]` makes: NAME, else `demo` for the default
    size and `demo-SIZE` for the others."""
    return name or ("demo" if size == "small" else f"demo-{size}")


@dataclass(frozen=True)
class DatasetDir:
    """The folder of one dataset and the path of each of its artifacts."""

    root: Path
    # stage -> folder, for a stage being written into a temp folder (see `staging`)
    overrides: tuple[tuple[str, Path], ...] = field(default=())

    @property
    def workspace(self) -> "Workspace":
        return Workspace(self.root.parent.parent)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def build_lock(self) -> Path:
        return self.root / ".build.lock"

    @property
    def exists(self) -> bool:
        return self.manifest.exists()

    def stage_dir(self, stage: str) -> Path:
        for name, path in self.overrides:
            if name == stage:
                return path
        return self.root / stage

    def staging(self, stage: str, tmp: Path) -> "DatasetDir":
        """The same dataset with `stage`'s folder at `tmp` (where the running stage writes)."""
        return replace(self, overrides=((stage, Path(tmp)), *self.overrides))

    # ---- demo source ---------------------------------------------------------------------------
    @property
    def source_dir(self) -> Path:
        return self.root / "source"

    @property
    def demo_events(self) -> Path:
        return self.source_dir / "events.csv"

    @property
    def demo_truth(self) -> Path:
        return self.source_dir / "truth.npz"

    @property
    def demo_item_files(self) -> tuple[Path, Path]:
        """The demo's item metadata, in RetailRocket's layout: item_properties.csv, category_tree.csv."""
        return self.source_dir / "item_properties.csv", self.source_dir / "category_tree.csv"

    def demo_chunk(self, n: int) -> Path:
        """`sessrec demo --chunks N`: the later time chunks of the log (chunk 1 is `demo_events`),
        for `sessrec data append`."""
        return self.source_dir / f"chunk-{n}.csv"

    def item_archive(self, fingerprint: str) -> Path:
        """An item index this dataset had before a rebuild replaced it (runs trained on it read it)."""
        return self.root / "items-archive" / f"{fingerprint}.parquet"

    # ---- stage artifacts -----------------------------------------------------------------------
    @property
    def events(self) -> Path:
        return self.stage_dir("ingest") / "events.parquet"

    @property
    def test_events(self) -> Path:
        return self.stage_dir("ingest") / "test_events.parquet"

    @property
    def sessions(self) -> Path:
        return self.stage_dir("sessionize") / "sessions.parquet"

    @property
    def test_sessions(self) -> Path:
        return self.stage_dir("sessionize") / "test_sessions.parquet"

    def split_sessions(self, split: str) -> Path:
        """Raw-id sessions of a split (train, val, test)."""
        return self.stage_dir("split") / f"{Split(split).value}.parquet"

    @property
    def items(self) -> Path:
        return self.stage_dir("items") / "items.parquet"

    def encoded_sessions(self, split: str) -> Path:
        """Sessions of a split as item indices (1..V, 0 = unknown)."""
        return self.stage_dir("items") / f"{Split(split).value}.parquet"

    @property
    def graph(self) -> Path:
        return self.stage_dir("graph") / "graph.npz"

    @property
    def pe(self) -> Path:
        return self.stage_dir("encodings") / "pe.npy"

    @property
    def oracle(self) -> Path:
        return self.stage_dir("oracle") / "oracle.json"

    @property
    def item_meta(self) -> Path:
        """Item metadata by raw id (engine.data.item_meta.ItemMeta): name, category, price, available."""
        return self.stage_dir("metadata") / "items.parquet"

    @property
    def item_categories(self) -> Path:
        return self.stage_dir("metadata") / "categories.parquet"


@dataclass(frozen=True)
class RunDir:
    """The folder of one run."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def tracking(self) -> Path:
        """The run's link to its MLflow run (engine.tracking), when tracked."""
        return self.root / "tracking.json"

    def test_ranks(self, protocol: str) -> Path:
        """Per-example ranks of the test evaluation under `protocol` (engine.evaluation.ranks.ExampleRanks)."""
        return self.root / f"test_ranks-{Protocol(protocol).value}.npz"

    @property
    def onnx(self) -> Path:
        """The run's own ONNX export (engine.export.onnx_runtime.ensure_run_onnx)."""
        return self.root / "export" / "model.onnx"

    def compiled(self, device: str = "cpu") -> Path:
        """The run's own AOTInductor-compiled encoder for a device type (engine.export.compiled)."""
        return self.root / "export" / f"encoder-{device}.pt2"

    def checkpoint(self, which: str) -> Path:
        """`best` or `last`."""
        if which not in ("best", "last"):
            raise InputError(f"checkpoint {which!r}: expected best or last")
        return self.best if which == "best" else self.last

    def served_checkpoint(self, which: str = "best") -> Path:
        """`checkpoint(which)`; for best, the last when no best exists yet (what recommending,
        serving and export load)."""
        path = self.checkpoint(which)
        return self.last if which == "best" and not path.exists() and self.last.exists() else path

    @property
    def exists(self) -> bool:
        return self.config.exists()

    @property
    def workspace(self) -> "Workspace":
        return Workspace(self.root.parent.parent)


@dataclass(frozen=True)
class ExperimentDir:
    """The folder of one A/B experiment (engine.serve.experiment writes it, engine.ab reads it)."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def state(self) -> Path:
        """Arms, split and phases (rewritten atomically at every change)."""
        return self.root / "experiment.json"

    def logs(self, kind: str) -> list[Path]:
        """The append-only log files of `kind` (impressions, feedback), oldest first."""
        return sorted(self.root.glob(f"{kind}-*.jsonl")) if self.root.is_dir() else []

    def new_log(self, kind: str, stamp: str, pid: int, seq: int) -> Path:
        return self.root / f"{kind}-{stamp}-{pid}-{seq:06d}.jsonl"

    @property
    def exists(self) -> bool:
        return self.state.exists()


@dataclass(frozen=True)
class RefreshDir:
    """`sessrec refresh DATASET`'s record of its steps (engine.refresh)."""

    root: Path

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "Workspace":
        path = Path(root) if root is not None else default_root()
        if path.exists() and not path.is_dir():
            raise InputError(f"workspace {path}: exists and is not a folder")
        return cls(path.expanduser().resolve())

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def downloads_dir(self) -> Path:
        return self.root / "downloads"

    def download_dir(self, dataset: str) -> Path:
        """Where `sessrec data fetch DATASET` puts the files it downloads."""
        return self.downloads_dir / dataset

    @property
    def logs_dir(self) -> Path:
        """The app's job records and child-process logs."""
        return self.root / "logs"

    def job_record(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.json"

    def job_log(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def job_threads(self, job_id: str) -> Path:
        """A running job's thread budget (one integer), rewritten by the app when jobs start or end."""
        return self.logs_dir / f"{job_id}.threads"

    @property
    def settings(self) -> Path:
        """The app's settings for this workspace (how jobs share the machine)."""
        return self.root / "settings.json"

    @property
    def tuning_dir(self) -> Path:
        return self.root / "tuning"

    @property
    def studies_db(self) -> Path:
        """Every hyperparameter study of the workspace (one Optuna SQLite database)."""
        return self.tuning_dir / "studies.db"

    def study_lock(self, study: str) -> Path:
        """Held by the process that runs trials of `study` (any text: the file name is made safe)."""
        return self.tuning_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", study)[:100] + ".lock")

    @property
    def experiments_dir(self) -> Path:
        return self.root / "experiments"

    def experiment(self, name: str) -> ExperimentDir:
        return ExperimentDir(self.experiments_dir / check_name(name, "experiment name"))

    def experiment_names(self) -> list[str]:
        """Experiments with a state file, most recently changed last."""
        if not self.experiments_dir.is_dir():
            return []
        found = [p for p in self.experiments_dir.iterdir() if NAME_RE.match(p.name) and (p / "experiment.json").exists()]
        return [p.name for p in sorted(found, key=lambda p: (p / "experiment.json").stat().st_mtime)]

    def refresh(self, dataset: str) -> RefreshDir:
        return RefreshDir(self.root / "refresh" / check_name(dataset))

    @property
    def mlflow_store(self) -> Path:
        """MLflow's default store for this workspace (`--tracking mlflow` without a URI)."""
        return self.root / "mlruns"

    def dataset(self, name: str) -> DatasetDir:
        return DatasetDir(self.datasets_dir / check_name(name))

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs_dir / check_name(run_id, "run id"))

    def existing_run(self, run_id: str) -> RunDir:
        """`run(run_id)`, or a clear error naming the recent runs when it does not exist."""
        d = self.run(run_id)
        if not d.exists:
            from engine.core.errors import InputError
            known = self.run_ids()
            raise InputError(f"run {run_id!r} not found in {self.runs_dir}"
                             + (f"; recent runs: {', '.join(known[-5:])}" if known else "; no runs yet (sessrec train)"))
        return d

    def dataset_names(self) -> list[str]:
        """Every dataset folder with a manifest (readable or not: status reports the broken ones)."""
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir()
                      if p.is_dir() and NAME_RE.match(p.name) and DatasetDir(p).exists)

    def run_ids(self) -> list[str]:
        """Every run folder with a config file (readable or not: the run store reports the rest)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir()
                      if p.is_dir() and NAME_RE.match(p.name) and RunDir(p).exists)
