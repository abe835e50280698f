"""Load a built dataset's artifacts for training, evaluation and recommendation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.config import DataConfig
from engine.core.errors import InputError
from engine.core.schema import Split, values
from engine.core.workspace import DatasetDir, Workspace
from engine.data.graph import CoocGraph
from engine.data.item_meta import FeatureSpec, ItemFeatures, ItemMeta
from engine.data.items import ItemIndex
from engine.data.manifest import Dataset
from engine.data.pipeline import status
from engine.data.sessions import Sessions

# everything a model may read; a model spec says what it needs (`ModelSpec.stages`); metadata only
# where the dataset has it
MODEL_STAGES = ("items", "graph", "encodings")


@dataclass
class DatasetArtifacts:
    name: str
    paths: DatasetDir
    config: DataConfig
    items: ItemIndex
    train: Sessions          # encoded: int32 item indices, 0 = unknown
    val: Sessions
    test: Sessions
    graph: CoocGraph | None  # None when the model does not need it
    pe: np.ndarray | None    # float32 [V+1, k]
    stats: dict              # per-stage stats from the manifest
    oracle: dict | None      # demo datasets: oracle Recall@K on the test split
    meta: ItemMeta | None = None   # item metadata (`sessrec data items`), when attached and asked for

    @property
    def n_items(self) -> int:
        return self.items.n_items

    def current_meta(self) -> ItemMeta | None:
        """The dataset's item metadata as built now (loaded once; None without item files)."""
        if not hasattr(self, "_current_meta"):
            self._current_meta = load_item_meta(Dataset.load(self.paths.workspace, self.name))
        return self._current_meta

    def item_features(self) -> ItemFeatures | None:
        """The feature ids of the train vocabulary (a spec fitted on it), None without metadata."""
        if self.meta is None:
            return None
        cached = getattr(self, "_features", None)
        if cached is None:
            spec = FeatureSpec.fit(self.meta, self.items.raw_ids)
            cached = ItemFeatures.of(spec, self.meta, self.items.raw_ids)
            self._features = cached
        return cached

    def use_feature_spec(self, spec: FeatureSpec) -> None:
        """Encode the items with `spec` rather than one fitted on them: a resumed run keeps its own,
        a warm start its older run's (the category embedding rows then mean the same categories)."""
        self._features = ItemFeatures.of(spec, self.meta, self.items.raw_ids) if self.meta is not None else None

    def split(self, name: str) -> Sessions:
        if name not in values(Split):
            raise InputError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)


def require_built(ds: Dataset, stages: tuple[str, ...] = MODEL_STAGES) -> None:
    states = {s.name: s for s in status(ds)}
    bad = [f"{n}: {states[n].state}" + (f": {states[n].error}" if states[n].error else "")
           for n in stages if n in states and states[n].state != "done"]
    if bad:
        raise InputError(f"dataset {ds.name!r} is not built ({'; '.join(bad)}); "
                         f"run `sessrec data build {ds.name}`")


def load_dataset(ws: Workspace, name: str, stages: tuple[str, ...] = MODEL_STAGES,
                 item_fingerprint: str | None = None) -> DatasetArtifacts:
    """The artifacts of `stages` (a model spec's `stages()`): the others are neither required nor
    loaded (their fields are None).

    `item_fingerprint`: the item index a run was trained on. When the dataset has been rebuilt since
    (`sessrec data append`), that index is read from the dataset's archive and the current splits
    are encoded with it (its unknown items are 0, as unseen items always are): a run trained before
    the rebuild is served and evaluated on today's sessions through its own vocabulary. Its graph and
    positional encodings are not kept, so only `items` may be asked for then."""
    ds = Dataset.load(ws, name)
    require_built(ds, stages)
    d = ds.paths
    items = ItemIndex.read(d.items)
    splits = {s: Sessions.read(d.encoded_sessions(s)) for s in values(Split)}
    if item_fingerprint is not None and item_fingerprint != items.fingerprint():
        archived = d.item_archive(item_fingerprint)
        if not archived.exists():
            raise InputError(f"dataset {name!r} was rebuilt with another item index and the one the run was "
                             f"trained on ({item_fingerprint}) is not kept; retrain the model")
        if set(stages) - {"items"}:
            raise InputError(f"dataset {name!r} was rebuilt with another item index: a model trained before "
                             f"that needs its old {', '.join(sorted(set(stages) - {'items'}))}, which are not "
                             f"kept; retrain it")
        items = ItemIndex.read(archived)
        for s in values(Split):
            raw = Sessions.read(d.split_sessions(s))
            splits[s] = raw.with_items(items.encode(raw.items))
    pe = np.load(d.pe) if "encodings" in stages else None
    oracle_rec = ds.stage_record("oracle")
    meta = load_item_meta(ds) if "metadata" in stages else None
    return DatasetArtifacts(
        name=name, paths=d, config=ds.config, items=items,
        train=splits["train"], val=splits["val"], test=splits["test"],
        graph=CoocGraph.load(d.graph) if "graph" in stages else None,
        pe=pe,
        stats={k: v.get("stats", {}) for k, v in ds.data.get("stages", {}).items()},
        oracle=(oracle_rec or {}).get("stats") if (oracle_rec or {}).get("status") == "done" else None,
        meta=meta,
    )


def load_item_meta(ds: Dataset) -> ItemMeta | None:
    """The dataset's item metadata when its metadata stage is built (None without item files)."""
    rec = ds.stage_record("metadata")
    if not ds.has_items or not rec or rec.get("status") != "done" or not ds.paths.item_meta.exists():
        return None
    return ItemMeta.read(ds.paths.item_meta, ds.paths.item_categories)
