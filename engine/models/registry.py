"""Model registry: names -> factories and default hyperparameters (`sessrec models` lists them)."""

from __future__ import annotations

from typing import Any

from engine.errors import InputError
from engine.models.base import ModelSpec


def all_specs() -> dict[str, ModelSpec]:
    from engine.models.baselines import BASELINE_SPECS
    from engine.models.gnn import GNN_SPECS
    return {s.name: s for s in (*GNN_SPECS, *BASELINE_SPECS)}


def get_spec(name: str) -> ModelSpec:
    specs = all_specs()
    if name not in specs:
        raise InputError(f"unknown model {name!r}; valid models: {', '.join(specs)}")
    return specs[name]


def _coerce(key: str, value: Any, default: Any) -> Any:
    """CLI values arrive as strings: convert to the default's type, with a clear error."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            if isinstance(default, bool):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(default, int):
                return int(value)
            if isinstance(default, float):
                return float(value)
        except ValueError:
            raise InputError(f"model parameter {key}={value!r}: expected {type(default).__name__}") from None
    if isinstance(default, bool) and not isinstance(value, bool):
        raise InputError(f"model parameter {key}={value!r}: expected true/false")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def resolve_params(name: str, overrides: dict[str, Any] | None = None,
                   device_type: str = "cpu") -> dict[str, Any]:
    """Defaults (with the CPU preset on CPU) updated by `overrides`; unknown keys are an error."""
    spec = get_spec(name)
    params = dict(spec.defaults)
    if device_type != "cuda":
        params.update(spec.cpu_overrides)
    for key, value in (overrides or {}).items():
        if key not in spec.defaults:
            raise InputError(f"model {name!r} has no parameter {key!r}; valid: {', '.join(spec.defaults)}")
        params[key] = _coerce(key, value, spec.defaults[key])
    return params


def build_model(name: str, params: dict[str, Any], data: Any):
    return get_spec(name).factory(params, data)
