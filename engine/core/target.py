"""What a recommendation comes from: a trained run, or a baseline fitted on a dataset.

Spelled `RUN_ID` or `baseline:NAME@DATASET` on the command line, in the HTTP service's reload
request and in the app; parsed here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.errors import InputError

BASELINE_PREFIX = "baseline:"


@dataclass(frozen=True)
class Target:
    """A run (`run_id`) or a baseline (`baseline` on `dataset`, its default parameters)."""

    run_id: str | None = None
    baseline: str | None = None
    dataset: str | None = None

    @classmethod
    def run(cls, run_id: str) -> "Target":
        return cls(run_id=run_id)

    @classmethod
    def of_baseline(cls, name: str, dataset: str) -> "Target":
        return cls(baseline=name, dataset=dataset)

    @classmethod
    def parse(cls, text: str) -> "Target":
        """`RUN_ID` or `baseline:NAME@DATASET`; InputError naming the expected form otherwise."""
        text = text.strip()
        if not text:
            raise InputError("target: expected a run id or baseline:NAME@DATASET, got nothing")
        if not text.startswith(BASELINE_PREFIX):
            return cls.run(text)
        name, sep, dataset = text[len(BASELINE_PREFIX):].partition("@")
        if not sep or not name.strip() or not dataset.strip():
            raise InputError(f"{text!r}: a baseline is baseline:NAME@DATASET, e.g. baseline:sknn@demo")
        return cls.of_baseline(name.strip(), dataset.strip())

    @property
    def is_baseline(self) -> bool:
        return self.baseline is not None

    def __str__(self) -> str:
        return f"{BASELINE_PREFIX}{self.baseline}@{self.dataset}" if self.is_baseline else str(self.run_id)
