"""Model registry: names -> kind, description, typed config class, the dataset stages it needs, and
where its builder lives (`sessrec models` lists them; the CLI's flags and the app's form come from
the config classes). Pure data: importing it loads no torch, so the CLI and the app read it at once;
`build_model` imports the model's module only when a model is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.core.config import (
    AttentionGNNConfig,
    Config,
    FFNGraphTransformerConfig,
    GNNConfig,
    HybridConfig,
    ItemKNNConfig,
    NoParams,
    SKNNConfig,
    SRConfig,
    STANConfig,
    VSTANConfig,
)
from engine.core.errors import InputError
from engine.core.schema import Conv, ModelKind, StageName


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    description: str
    config: type[Config]
    builder: str                                  # "module:function(cfg, data, **options)"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def trains(self) -> bool:
        """True for models trained over epochs (GNNs); baselines and hybrids are fitted at once."""
        return self.kind == ModelKind.GNN

    def resolve(self, values: Mapping[str, Any] | None = None, device_type: str = "cpu") -> Config:
        """The typed hyperparameters: defaults (CPU preset off CUDA) updated by `values`."""
        return self.config.from_values(values, device_type, what=f"model {self.name!r}")

    def stages(self, cfg: Config | Mapping[str, Any] | None = None) -> tuple[StageName, ...]:
        """The dataset stages this model reads (with hyperparameters `cfg`, typed or as saved):
        no baseline needs the Laplacian PE, and a GNN without PE does not either; a GNN with item
        features reads the item metadata (where the dataset has it: `require_built` passes over a
        stage a dataset does not have)."""
        if isinstance(cfg, Mapping):
            cfg = self.config.from_dict(cfg)
        if self.kind == ModelKind.HYBRID:       # the GNN's PE is in its checkpoint
            return (StageName.ITEMS, StageName.GRAPH)
        if self.kind == ModelKind.BASELINE:
            return (StageName.ITEMS, StageName.GRAPH) if self.options.get("uses_graph") else (StageName.ITEMS,)
        meta = (StageName.METADATA,) if cfg is None or getattr(cfg, "item_features", False) else ()
        if cfg is not None and not getattr(cfg, "use_pe", True):
            return (StageName.ITEMS, StageName.GRAPH, *meta)
        return (StageName.ITEMS, StageName.GRAPH, StageName.ENCODINGS, *meta)


_GNN = "engine.models.gnn:build_gnn"
_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("graphsage", ModelKind.GNN, "GraphSAGE (mean aggregation; edge weights unused) + attention readout",
              GNNConfig, _GNN, {"conv": Conv.SAGE}),
    ModelSpec("gat", ModelKind.GNN, "GAT (edge weights in the attention) + attention readout",
              AttentionGNNConfig, _GNN, {"conv": Conv.GAT}),
    ModelSpec("graph_transformer", ModelKind.GNN,
              "Graph Transformer (TransformerConv, gated residual, no FFN: the reference's best)",
              AttentionGNNConfig, _GNN, {"conv": Conv.TRANSFORMER}),
    ModelSpec("graph_transformer_ffn", ModelKind.GNN, "Graph Transformer with a feed-forward block per layer",
              FFNGraphTransformerConfig, _GNN, {"conv": Conv.TRANSFORMER}),
    ModelSpec("pop", ModelKind.BASELINE, "Train popularity (the same list for every session)", NoParams,
              "engine.models.baselines:build_pop"),
    ModelSpec("spop", ModelKind.BASELINE, "Session items by count and recency, then train popularity",
              NoParams, "engine.models.baselines:build_spop"),
    ModelSpec("itemknn", ModelKind.BASELINE,
              "Item-kNN on the co-occurrence graph (cosine), recency-weighted sum over the prefix",
              ItemKNNConfig, "engine.models.baselines:build_itemknn", {"uses_graph": True}),
    ModelSpec("sknn", ModelKind.BASELINE,
              "V-SKNN session-kNN: position-weighted prefix, k recent similar train sessions",
              SKNNConfig, "engine.models.baselines:build_sknn"),
    ModelSpec("sr", ModelKind.BASELINE,
              "Sequential rules: the last item's rules to items that followed it within `steps`",
              SRConfig, "engine.models.rules:build_sr"),
    ModelSpec("stan", ModelKind.BASELINE,
              "STAN session-kNN: position-, recency- and item-distance-weighted neighbours",
              STANConfig, "engine.models.stan:build_stan"),
    ModelSpec("vstan", ModelKind.BASELINE,
              "V-STAN: STAN plus V-SKNN's shared-position weight and an idf boost",
              VSTANConfig, "engine.models.stan:build_vstan"),
    ModelSpec("hybrid", ModelKind.HYBRID,
              "A finished GNN run mixed with a baseline, the baseline's share chosen on validation",
              HybridConfig, "engine.models.hybrid:build_hybrid"),
)
SPECS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
BASELINES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.kind == ModelKind.BASELINE)
GNNS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.kind == ModelKind.GNN)


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise InputError(f"unknown model {name!r}; valid models: {', '.join(SPECS)}")
    return SPECS[name]


def resolve_params(name: str, overrides: Mapping[str, Any] | None = None,
                   device_type: str = "cpu") -> dict[str, Any]:
    """Complete hyperparameters as a JSON-able dict (what config.json and checkpoints store)."""
    return get_spec(name).resolve(overrides, device_type).to_dict()


def build_model(name: str, params: Mapping[str, Any] | Config, data: Any):
    """The model `name` with `params` (a config or its dict) for dataset artifacts `data`."""
    spec = get_spec(name)
    cfg = params if isinstance(params, Config) else spec.config.from_dict(params)
    module, func = spec.builder.split(":")
    options = {k: v for k, v in spec.options.items() if k != "uses_graph"}
    return getattr(importlib.import_module(module), func)(cfg, data, **options)
