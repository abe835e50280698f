"""What a study tunes: its dataset, model, objective and the values given (fixed for every trial).

Stored with the study (Optuna's user attributes); built from a user's values by `from_values`, the
one check the CLI and the app's Tune form share. Imports no Optuna: the app checks its form with it.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from engine.core.argv import to_argv
from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.schema import Protocol, values
from engine.models.registry import SPECS, get_spec

# TrainConfig fields that may change between sessions of one study: they do not change results
FREE_FIELDS = ("device", "num_threads", "eval_batch_size")

@dataclass(frozen=True)
class TuneSetup:
    """The fixed part of a study: dataset, model, objective, and the flags given (not tuned)."""

    dataset: str
    model: str
    metric: str
    protocol: str
    seed: int = 0
    train: dict = field(default_factory=dict)      # TrainConfig fields given on the command line
    params: dict = field(default_factory=dict)     # model hyperparameters given on the command line

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_values(cls, dataset: str | None, model: str | None, metric: str, protocol: str, seed: int = 0,
                    train: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None) -> "TuneSetup":
        """A study's setup from the values a user gave (the CLI's flags, the app's Tune form): every
        value checked here, InputError naming the first bad one (before any trial runs). `train`:
        TrainConfig fields fixed for every trial; `params`: model hyperparameters fixed (typed or
        text, parsed by the model's config)."""
        from engine.core.metrics import metric_names  # numpy: not when the CLI starts
        names = metric_names()
        if metric not in names:
            raise InputError(f"--metric {metric!r}: expected one of {', '.join(names)}")
        if protocol not in values(Protocol):
            raise InputError(f"--protocol {protocol!r}: expected one of {', '.join(values(Protocol))}")
        if model is None:
            raise InputError("--model is required (one of " + ", ".join(SPECS) + ")")
        spec = get_spec(model)
        params = dict(params or {})
        params = {k: v for k, v in spec.resolve(params).to_dict().items() if k in params}   # typed, checked
        train = dict(train or {})
        TrainConfig(**{**train, "seed": seed})          # the seed too: every trial trains with it
        return cls(dataset=dataset or "demo", model=spec.name, metric=metric, protocol=protocol, seed=seed,
                   train={k: getattr(v, "value", v) for k, v in train.items()}, params=params)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TuneSetup":
        return cls(**{k: d[k] for k in ("dataset", "model", "metric", "protocol", "seed", "train", "params")
                      if k in d})

    def identity(self) -> dict[str, Any]:
        """What must not change when a study is continued."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in self.train.items() if k not in FREE_FIELDS}
        return d

    @property
    def fixed(self) -> set[str]:
        return set(self.train) | set(self.params)

    def values(self, sampled: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TrainConfig fields, model hyperparameters) of one trial: the given ones and `sampled`."""
        from engine.tune.spaces import split_params
        train, params = split_params(self.model, sampled)
        return ({**self.train, **train, "seed": self.seed, "val_protocol": self.protocol},
                {**self.params, **params})

    def train_config(self, sampled: Mapping[str, Any]) -> TrainConfig:
        """A trial's run config (InputError when the combination is refused, e.g. hidden % heads)."""
        train, params = self.values(sampled)
        get_spec(self.model).resolve(params)
        return TrainConfig(dataset=self.dataset, model=self.model, model_params=params, **train)

    def train_command(self, sampled: Mapping[str, Any]) -> str:
        """The `sessrec train ...` command that trains this configuration again (with its test)."""
        train, params = self.values(sampled)
        return shlex.join(["sessrec", "train", "--dataset", self.dataset, "--model", self.model,
                           *to_argv({**train, **params}, skip=("num_threads",))])


def default_name(dataset: str, model: str, metric: str) -> str:
    return f"{dataset}-{model}-{metric}"
