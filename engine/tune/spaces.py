"""Search spaces per model name: which fields a study varies and over what range.

A space's names are config fields: the model's config (`hidden`, `k`, ...) or `TrainConfig`
(`lr`, `weight_decay`, `batch_size`); each range lies inside the field's own `param(min=, max=)`
bounds (tests check both). A field given on the command line is fixed and leaves the space.
Importing this module loads neither torch nor Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from engine.core.config import Config, TrainConfig
from engine.core.errors import InputError
from engine.core.schema import Readout, Weighting, values
from engine.models.registry import SPECS, get_spec


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def ends(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def ends(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def ends(self) -> tuple[Any, ...]:
        return self.options


Dist = Union[IntRange, FloatRange, Choice]
Space = Mapping[str, Dist]

# ---- the spaces ----------------------------------------------------------------------------------
_OPTIM: dict[str, Dist] = {
    "lr": FloatRange(1e-4, 1e-2, log=True),
    "weight_decay": FloatRange(1e-6, 1e-2, log=True),
    "batch_size": Choice((128, 256, 512, 1024)),
}
_GNN: dict[str, Dist] = {
    "hidden": Choice((32, 64, 128, 256)),
    "layers": IntRange(1, 3),
    "dropout": FloatRange(0.0, 0.5),
    "scale": FloatRange(4.0, 32.0, log=True),
    "readout": Choice(values(Readout)),
    "pos_emb": Choice((False, True)),
    "global_k": Choice((0, 8, 16)),
    "switch": Choice((False, True)),
    "contrastive": Choice((0.0, 0.05, 0.1, 0.2)),
    "highway": Choice((False, True)),
    **_OPTIM,
}
_ATTENTION = {**_GNN, "heads": Choice((1, 2, 4))}          # every hidden choice divides by every head count
_WEIGHTING = Choice(values(Weighting))
# around session-rec's tuned values (the configs' defaults), as in its own searches
_STAN: dict[str, Dist] = {
    "k": IntRange(50, 2000, log=True),
    "sample": IntRange(500, 10000, log=True),
    "lambda_spw": FloatRange(0.25, 8.0, log=True),
    "lambda_snh": FloatRange(1.0, 200.0, log=True),
    "lambda_inh": FloatRange(0.25, 20.0, log=True),
}

SPACES: dict[str, dict[str, Dist]] = {
    "graphsage": _GNN,
    "gat": _ATTENTION,
    "graph_transformer": _ATTENTION,
    "graph_transformer_ffn": {**_ATTENTION, "ffn_mult": IntRange(1, 4)},
    "pop": {},
    "spop": {},
    "itemknn": {"neighbors": IntRange(10, 500, log=True), "decay": FloatRange(0.0, 1.0),
                "alpha": FloatRange(0.0, 1.0)},
    "sknn": {"k": IntRange(10, 500, log=True), "sample": IntRange(100, 5000, log=True),
             "weighting": _WEIGHTING, "score_weighting": _WEIGHTING, "idf": FloatRange(0.0, 2.0)},
    "sr": {"steps": IntRange(2, 20), "weighting": _WEIGHTING, "pruning": IntRange(5, 50)},
    "stan": _STAN,
    "vstan": {**_STAN, "lambda_ipw": FloatRange(0.25, 20.0, log=True), "lambda_idf": FloatRange(0.0, 20.0)},
}

TRAIN_FIELDS = frozenset(p.name for p in TrainConfig.params())


def owner(model: str, name: str) -> type[Config] | None:
    """The config class that has field `name` for `model` (its model config first)."""
    cls = get_spec(model).config
    if any(p.name == name for p in cls.params()):
        return cls
    return TrainConfig if name in TRAIN_FIELDS else None


def check_space(model: str) -> list[str]:
    """What is wrong with `model`'s space (empty when nothing): unknown fields, ranges outside a
    field's bounds, choices the field refuses."""
    problems = []
    for name, dist in SPACES.get(model, {}).items():
        cls = owner(model, name)
        if cls is None:
            problems.append(f"{model}: {name!r} is no field of {get_spec(model).config.__name__} or TrainConfig")
            continue
        spec = cls.param(name)
        for value in dist.ends():
            try:
                spec.parse(value)
            except InputError as e:
                problems.append(f"{model}: space of {cls.__name__}.{e}")
    return problems


def space_for(model: str, fixed: Sequence[str] = ()) -> dict[str, Dist]:
    """The fields a study of `model` varies: its space without the `fixed` ones."""
    if model not in SPECS:
        get_spec(model)                                # the error that lists the models
    if model not in SPACES:
        raise InputError(f"model {model!r} has no search space; models with one: "
                         f"{', '.join(m for m in SPACES if m in SPECS)}")
    problems = check_space(model)
    if problems:
        raise InputError("; ".join(problems))
    return {k: v for k, v in SPACES[model].items() if k not in set(fixed)}


def split_params(model: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sampled values -> (TrainConfig fields, model hyperparameters)."""
    cls = get_spec(model).config
    model_names = {p.name for p in cls.params()}
    train = {k: v for k, v in params.items() if k not in model_names}
    return train, {k: v for k, v in params.items() if k in model_names}
