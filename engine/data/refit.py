"""The refit twin of a dataset: the same raw log and pipeline, with validation joined to train.

The papers' protocol trains the final model on every training session; sessrec chooses epochs and
hyperparameters on a validation share first (`engine.train.refit`), then trains again on
`<name>.refit`: the same source files and data config with `refit` on, so its split has the same test
sessions, no validation, and its item index, co-occurrence graph and PE come from train + validation
(validation's items join the vocabulary).
"""

from __future__ import annotations

from dataclasses import replace

from engine.core.errors import InputError
from engine.core.progress import ProgressFn
from engine.data.manifest import Dataset
from engine.data.pipeline import build

SUFFIX = ".refit"


def refit_name(name: str) -> str:
    return name if name.endswith(SUFFIX) else name + SUFFIX


def is_refit(ds: Dataset) -> bool:
    return bool(ds.config.refit)


def refit_dataset(ds: Dataset, build_it: bool = True, progress: ProgressFn | None = None) -> Dataset:
    """`ds`'s refit twin, created or brought in line with `ds`'s source and config, and built."""
    if is_refit(ds):
        return ds
    if not ds.config.val_ratio:
        raise InputError(f"dataset {ds.name!r} has no validation split (val_ratio 0): nothing chooses the "
                         f"epochs to refit with; rebuild it with --val-ratio 0.1")
    name = refit_name(ds.name)
    twin = Dataset.create(ds.ws, name, ds.source_file("path"), replace(ds.config, refit=True),
                          test_path=ds.source_file("test_path"))
    if twin.source.get("refit_of") != ds.name:
        twin.data["source"]["refit_of"] = ds.name
        twin.save()
    if build_it:
        build(twin, progress=progress)
    return Dataset.load(ds.ws, name)
