"""Uncertainty of offline metrics: bootstrap confidence intervals and paired tests over test sessions.

The unit of resampling is the session, not the example: the prefixes of one session share a user and
an intent, so their hits are correlated and an example-level bootstrap would give intervals that are
too narrow. A resample draws S sessions with replacement out of S and keeps all examples of each;
its metric is the mean over the examples drawn (a ratio: sessions have different example counts).

Everything is vectorised over resamples and metrics: per-session sums [S, M] times a count matrix
[B, S] (a chunk of resamples at a time, to bound memory on 16K-session test sets). The resamples are
a function of (seed, number of sessions) only, so every system evaluated on the same test sessions
is resampled identically. numpy only (scipy.stats would add seconds of import for one binomial tail).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator, Mapping

import numpy as np

N_BOOT = 1000
LEVEL = 0.95
_CHUNK_CELLS = 4_000_000     # entries of one [resamples x sessions] count matrix (32 MB as int64)


@dataclass(frozen=True)
class Interval:
    """A metric's point estimate (mean over examples) and its percentile bootstrap interval."""

    mean: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """System A minus system B on the same examples.

    `diff`: mean difference; `lo`, `hi`: its paired bootstrap interval over sessions; `p_value`:
    two-sided paired randomisation test (each session's A/B labels swapped at random, i.e. the sign of
    its summed difference flipped); `p_sign`: two-sided sign test over sessions whose mean
    difference is not 0 (`a_better` of them favour A, `b_better` favour B)."""

    diff: float
    lo: float
    hi: float
    p_value: float
    p_sign: float
    sessions: int
    a_better: int
    b_better: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _stack(values: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(values)
    if not names:
        raise ValueError("no metrics given")
    x = np.stack([np.asarray(values[n], dtype=np.float64) for n in names], axis=1)
    return names, x


def _session_sums(x: np.ndarray, session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-session sums [S, M] of the example values `x` [N, M], and example counts [S]."""
    session = np.asarray(session)
    if len(session) != len(x):
        raise ValueError(f"{len(x)} values but {len(session)} session indices")
    if not len(x):
        raise ValueError("no examples")
    _, codes = np.unique(session, return_inverse=True)
    codes = codes.reshape(-1)
    n_sessions = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_sessions).astype(np.float64)
    # bincount per metric column: one flat bincount with the column as an offset
    m = x.shape[1]
    flat = (codes[:, None] * m + np.arange(m)[None, :]).reshape(-1)
    sums = np.bincount(flat, weights=x.reshape(-1), minlength=n_sessions * m).reshape(n_sessions, m)
    return sums, counts


def resample_counts(n_sessions: int, n_boot: int = N_BOOT, seed: int = 0) -> Iterator[np.ndarray]:
    """Chunks of the bootstrap count matrix: row b says how often each session is drawn in
    resample b (each row sums to `n_sessions`). Same (n_sessions, n_boot, seed), same matrix."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(1, n_sessions))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_sessions, size=(b, n_sessions))
        flat = (draws + (np.arange(b) * n_sessions)[:, None]).reshape(-1)
        yield np.bincount(flat, minlength=b * n_sessions).reshape(b, n_sessions)


def _bootstrap_means(sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, M] resampled means: (w @ sums) / (w @ counts) per resample w."""
    parts = [(w @ sums) / (w @ counts)[:, None] for w in resample_counts(len(counts), n_boot, seed)]
    return np.concatenate(parts, axis=0)


def _percentiles(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError(f"level {level}: expected a value between 0 and 1")
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail], axis=0)
    return lo, hi


def bootstrap_ci(values: Mapping[str, np.ndarray], session: np.ndarray, n_boot: int = N_BOOT,
                 level: float = LEVEL, seed: int = 0) -> dict[str, Interval]:
    """Per metric (name -> per-example values, all over the same examples), its mean and a `level`
    percentile interval from `n_boot` session resamples."""
    names, x = _stack(values)
    sums, counts = _session_sums(x, session)
    lo, hi = _percentiles(_bootstrap_means(sums, counts, n_boot, seed), level)
    mean = x.mean(axis=0)
    return {n: Interval(float(mean[i]), float(lo[i]), float(hi[i])) for i, n in enumerate(names)}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a Binomial(n, 1/2) count at least as far from n/2 as `wins`),
    n = wins + losses (ties left out). 1 when n = 0."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    i = np.arange(k + 1)
    log_pmf = log_fact[n] - log_fact[i] - log_fact[n - i] - n * np.log(2.0)
    return float(min(1.0, 2.0 * np.exp(log_pmf).sum()))


def paired_test(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], session: np.ndarray,
                n_boot: int = N_BOOT, n_perm: int = N_BOOT, level: float = LEVEL,
                seed: int = 0) -> dict[str, PairedTest]:
    """A minus B per metric, both given per example over the same examples (same order), with
    `session` the example's session: see `PairedTest`."""
    if list(a) != list(b):
        raise ValueError(f"metrics differ: {list(a)} vs {list(b)}")
    names, xa = _stack(a)
    _, xb = _stack(b)
    if xa.shape != xb.shape:
        raise ValueError(f"A has {len(xa)} examples, B {len(xb)}: a paired test needs the same examples")
    sums, counts = _session_sums(xa - xb, session)
    n = counts.sum()
    diff = sums.sum(axis=0) / n
    lo, hi = _percentiles(_bootstrap_means(sums, counts, n_boot, seed), level)

    # randomisation: flip the sign of each session's summed difference; a statistic at least as
    # extreme as the observed one (up to rounding) counts, and the observed labelling is one of them
    rng = np.random.default_rng(seed + 1)
    tol = 1e-12 * (1.0 + np.abs(sums).sum(axis=0) / n)
    extreme = np.zeros(len(names), dtype=np.int64)
    chunk = max(1, _CHUNK_CELLS // len(counts))
    for start in range(0, n_perm, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, n_perm - start), len(counts))) * 2.0 - 1.0
        extreme += (np.abs(signs @ sums) / n >= np.abs(diff) - tol).sum(axis=0)
    p_perm = (1 + extreme) / (1 + n_perm)

    out = {}
    for i, name in enumerate(names):
        na, nb = int((sums[:, i] > 0).sum()), int((sums[:, i] < 0).sum())
        p_sign = sign_test(na, nb)
        out[name] = PairedTest(float(diff[i]), float(lo[i]), float(hi[i]), float(p_perm[i]), p_sign,
                               len(counts), na, nb)
    return out
