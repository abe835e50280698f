"""Per-example ranks of one evaluation, kept for statistics: what `evaluate(..., return_ranks=True)`
returns and what a run saves beside its test results (`RunDir.test_ranks(protocol)`).

`session` is the example's session index in its split (the unit a bootstrap resamples: the prefixes
of one session are correlated), `prefix` its prefix length; both as `make_examples` made them.
numpy only (the benchmarks read these files without torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.atomic import read_npz, write_npz
from engine.core.errors import InputError

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExampleRanks:
    ranks: np.ndarray      # float64 [N]: 1-based rank of the target, inf = miss
    session: np.ndarray    # int64 [N]: session index in the split
    prefix: np.ndarray     # int64 [N]: prefix length (the target is item number `prefix`)

    def __post_init__(self) -> None:
        if not (len(self.ranks) == len(self.session) == len(self.prefix)):
            raise ValueError(f"ranks {len(self.ranks)}, session {len(self.session)} and prefix "
                             f"{len(self.prefix)}: expected one value per example in each")

    def __len__(self) -> int:
        return len(self.ranks)

    def same_examples(self, other: "ExampleRanks") -> bool:
        """Both evaluations scored the same examples (sessions and prefixes, in the same order): the
        condition of a paired comparison."""
        return len(self) == len(other) and bool(np.array_equal(self.session, other.session)
                                                and np.array_equal(self.prefix, other.prefix))

    def save(self, path: str | Path) -> None:
        write_npz(path, {"format_version": np.int64(_FORMAT_VERSION), "ranks": self.ranks,
                         "session": self.session, "prefix": self.prefix}, f"test ranks {Path(path).name}")

    @classmethod
    def load(cls, path: str | Path) -> "ExampleRanks":
        z = read_npz(path, _FORMAT_VERSION, "test-ranks", "evaluate the run again")
        try:
            return cls(z["ranks"].astype(np.float64), z["session"].astype(np.int64), z["prefix"].astype(np.int64))
        except KeyError as e:
            raise InputError(f"{path}: not a test-ranks file ({e})") from e
