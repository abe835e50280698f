"""What a job asks the engine to do, typed: one request class per kind of job, each spelling its own
command line (`args()`, through `engine.core.argv.to_argv`, the inverse of the CLI's flag generator).

A job keeps its request, so what the scheduler needs (a training's device, its data-parallel
workers), what the app shows (a tuning job's study) and what the history records are read from
typed fields, never parsed back out of argv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from engine.core.argv import to_argv
from engine.core.config import TrainConfig
from engine.core.schema import Device, JobKind
from engine.core.target import Target
from engine.core.workspace import demo_dataset_name

if TYPE_CHECKING:
    from engine.tune.setup import TuneSetup


@dataclass(frozen=True)
class JobRequest:
    """The part every request shares: its kind, and what a job of it reads and writes."""

    kind: ClassVar[JobKind]

    def args(self) -> list[str]:
        """The engine's arguments (after the global `--workspace W --events jsonl`)."""
        raise NotImplementedError

    def title(self) -> str:
        raise NotImplementedError

    def writes(self) -> str | None:
        """The dataset the job writes (a training only reads its dataset: None)."""
        return None

    def trains(self) -> str | None:
        """The run the job trains (its id), if any."""
        return None

    def device(self) -> str:
        """The device its work runs on (`auto` is a GPU where there is one)."""
        return Device.CPU.value

    def gpu_workers(self) -> int:
        """Processes of the job that each want a GPU of their own (data-parallel workers)."""
        return 1


@dataclass(frozen=True)
class DemoRequest(JobRequest):
    """`sessrec demo`: generate the seeded demo log and build it."""

    kind: ClassVar[JobKind] = JobKind.DEMO
    size: str = "small"
    name: str | None = None
    force: bool = False

    def args(self) -> list[str]:
        return ["demo", *to_argv({"size": self.size, "name": self.name, "force": self.force or None})]

    def title(self) -> str:
        return f"demo {self.size} -> {self.writes()}"

    def writes(self) -> str:
        return demo_dataset_name(self.size, self.name)


@dataclass(frozen=True)
class ImportRequest(JobRequest):
    """`sessrec data import PATH --format F --name NAME [--test-file T]`."""

    kind: ClassVar[JobKind] = JobKind.IMPORT
    path: str = ""
    format: str = ""
    name: str = ""
    test_file: str | None = None

    def args(self) -> list[str]:
        return ["data", "import", self.path, *to_argv({"format": self.format, "name": self.name,
                                                      "test_file": self.test_file})]

    def title(self) -> str:
        return f"import {self.name} ({self.format})"

    def writes(self) -> str:
        return self.name


@dataclass(frozen=True)
class BuildRequest(JobRequest):
    """`sessrec data build NAME [--force [STAGE]]` (`force`: True for every stage, or a stage name)."""

    kind: ClassVar[JobKind] = JobKind.BUILD
    name: str = ""
    force: bool | str = False

    def args(self) -> list[str]:
        args = ["data", "build", self.name]
        if self.force is True:
            args.append("--force")
        elif self.force:
            args += ["--force", str(self.force)]
        return args

    def title(self) -> str:
        what = "" if not self.force else " (all stages)" if self.force is True else f" (from {self.force})"
        return f"{'rebuild' if self.force else 'build'} {self.name}{what}"

    def writes(self) -> str:
        return self.name


@dataclass(frozen=True)
class DeleteRequest(JobRequest):
    """`sessrec data delete NAME --yes`."""

    kind: ClassVar[JobKind] = JobKind.DELETE
    name: str = ""

    def args(self) -> list[str]:
        return ["data", "delete", self.name, "--yes"]

    def title(self) -> str:
        return f"delete {self.name}"

    def writes(self) -> str:
        return self.name


@dataclass(frozen=True)
class TrainRequest(JobRequest):
    """`sessrec train`: `options` are TrainConfig fields, `params` model hyperparameters (both by
    field name), `workers` > 1 data-parallel workers (`--nproc`), `gpus` the GPUs (indices among
    the app's) it must have, None: any free ones."""

    kind: ClassVar[JobKind] = JobKind.TRAIN
    dataset: str = "demo"
    model: str = "graph_transformer"
    options: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    gpus: list[int] | None = None
    run_id: str | None = None

    def args(self) -> list[str]:
        return ["train", *to_argv({"dataset": self.dataset, "model": self.model, "run_id": self.run_id}),
                *to_argv({**self.options, **self.params}),
                *(to_argv({"nproc": self.workers}) if self.workers > 1 else [])]

    def title(self) -> str:
        return f"train {self.model} on {self.dataset}" + (f" ({self.workers} workers)" if self.workers > 1 else "")

    def trains(self) -> str | None:
        return self.run_id

    def device(self) -> str:
        device = self.options.get("device") or TrainConfig.device
        return str(getattr(device, "value", device))

    def gpu_workers(self) -> int:
        return len(self.gpus) if self.gpus else self.workers


@dataclass(frozen=True)
class TuneRequest(JobRequest):
    """`sessrec tune`: a study (`setup`, checked by `TuneSetup.from_values`) run to `trials`."""

    kind: ClassVar[JobKind] = JobKind.TUNE
    setup: TuneSetup | None = None
    study: str = ""
    trials: int = 10

    def args(self) -> list[str]:
        s = self.setup
        assert s is not None, "a tuning request needs its setup"
        return ["tune", *to_argv({"dataset": s.dataset, "model": s.model, "study": self.study,
                                  "trials": self.trials, "metric": s.metric, "protocol": s.protocol}),
                *(to_argv({"seed": s.seed}) if s.seed else []), *to_argv({**s.train, **s.params})]

    def title(self) -> str:
        s = self.setup
        return f"tune {s.model} on {s.dataset} ({self.trials} trials)" if s else f"tune {self.study}"


@dataclass(frozen=True)
class ServeRequest(JobRequest):
    """`sessrec serve TARGET` on host:port. The API key is never an argument (argv is visible in
    `ps` and kept in the job record): the job runner passes it in the environment."""

    kind: ClassVar[JobKind] = JobKind.SERVE
    target: str = ""                  # a run id or baseline:NAME@DATASET (`engine.core.target`)
    host: str = "127.0.0.1"
    port: int = 8000
    runtime: str = "torch"
    api_key: str | None = field(default=None, repr=False)
    search: str = "auto"              # exact | pq | auto (the server's default: not written)
    workers: int = 1
    insecure: bool = False
    arms: tuple[str, ...] = ()        # "A=TARGET" each: an A/B server (then `target` is arm A's)

    def args(self) -> list[str]:
        what = [x for a in self.arms for x in ("--arm", a)] if self.arms else [str(Target.parse(self.target))]
        return ["serve", *what,
                *to_argv({"host": self.host, "port": self.port, "runtime": self.runtime,
                          "search": None if self.search == "auto" else self.search,
                          "workers": self.workers if self.workers > 1 else None,
                          "insecure": self.insecure or None})]

    def title(self) -> str:
        if self.arms:
            return f"serve A/B {' vs '.join(a.partition('=')[2] for a in self.arms)} on {self.host}:{self.port}"
        return f"serve {self.target} on {self.host}:{self.port}"
