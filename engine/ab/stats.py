"""The statistics of an online experiment, from scipy and statsmodels.

- **Intervals per arm**: Wilson intervals for rates of independent units (impressions clicked,
  sessions converted; `statsmodels.stats.proportion.proportion_confint`), t intervals for the mean
  session CTR (`statsmodels.stats.weightstats.DescrStatsW`).
- **The difference, watched continuously**: a mixture sequential probability ratio test (mSPRT;
  Johari, Pekelis and Walsh, "Always valid inference", 2017/2022) on the difference in mean session
  CTR between an arm and the control. With the difference's estimate `d` and its variance `V`
  (Welch's, `statsmodels.stats.weightstats.CompareMeans`), the likelihood ratio of "the difference is
  drawn from N(0, tau^2)" against "it is 0" is the ratio of two normal densities at `d`:
  `Lambda = N(d; 0, V + tau^2) / N(d; 0, V)` (`scipy.stats.norm.logpdf`). Its always-valid p-value
  is the running minimum of `1 / Lambda` over every look, so the experiment may be read after
  every session and stopped at any time with the error rate `alpha` held (asymptotically, as the
  session means become normal). Inverting the test at the current look gives the confidence
  sequence `d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))`.
- **Sample-ratio mismatch**: `scipy.stats.chisquare` of the sessions per arm against the split.

The session, not the impression, is the unit: sessions are what the hash assigns, and impressions
of one session are not independent (a test on impressions would be too sure of itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def wilson(successes: int, n: int, alpha: float) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    from statsmodels.stats.proportion import proportion_confint
    lo, hi = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


def mean_interval(values: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    from statsmodels.stats.weightstats import DescrStatsW
    d = DescrStatsW(values)
    if d.std == 0:
        return float(d.mean), float(d.mean)
    lo, hi = d.tconfint_mean(alpha=alpha)
    return float(lo), float(hi)


def log_lr(d: np.ndarray, var: np.ndarray, tau: float) -> np.ndarray:
    """log Lambda of the mSPRT at each look (the difference `d`, its variance `var`)."""
    from scipy.stats import norm
    return norm.logpdf(d, 0.0, np.sqrt(var + tau ** 2)) - norm.logpdf(d, 0.0, np.sqrt(var))


def cs_half_width(var: float, tau: float, alpha: float) -> float:
    """Half width of the confidence sequence at a look with variance `var` (inverts `log_lr`)."""
    return float(np.sqrt(var * (var + tau ** 2) / tau ** 2 * (2 * np.log(1 / alpha) + np.log((var + tau ** 2) / var))))


@dataclass
class Sequential:
    """The mSPRT of treatment minus control over the looks so far."""

    difference: float | None          # at the last look
    interval: tuple[float, float] | None      # the confidence sequence at the last look
    p_value: float                    # always valid
    decided_at: int | None            # sessions (both arms) at the first look with p <= alpha
    looks: int

    def verdict(self, alpha: float, control: str, arm: str) -> str:
        if self.p_value > alpha or self.difference is None:
            return "no difference yet"
        return f"{arm} better" if self.difference > 0 else f"{control} better"


def sequential_test(order: np.ndarray, values: np.ndarray, control: str, arm: str, tau: float, alpha: float,
                    min_sessions: int) -> Sequential:
    """The mSPRT looking after every session. `order`: the arm of each session in the order the
    sessions arrived; `values`: each session's CTR. Looks start once both arms have `min_sessions`."""
    keep = (order == control) | (order == arm)
    order, values = order[keep], values[keep].astype(np.float64)
    stats = {}
    for name in (control, arm):
        m = (order == name).astype(np.float64)
        n = np.cumsum(m)
        s1 = np.cumsum(m * values)
        s2 = np.cumsum(m * values ** 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            var = (s2 - n * mean ** 2) / (n - 1)          # the sample variance after each session
        stats[name] = (n, mean, np.maximum(var, 0.0))
    (n0, m0, v0), (n1, m1, v1) = stats[control], stats[arm]
    ok = (n0 >= min_sessions) & (n1 >= min_sessions)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = m1 - m0
        var = v0 / n0 + v1 / n1
    ok &= var > 0
    if not ok.any():
        return Sequential(None, None, 1.0, None, 0)
    llr = log_lr(d[ok], var[ok], tau)
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-llr)))
    hit = np.flatnonzero(p <= alpha)
    sessions = np.flatnonzero(ok) + 1
    last = np.flatnonzero(ok)[-1]
    h = cs_half_width(float(var[last]), tau, alpha)
    return Sequential(float(d[last]), (float(d[last] - h), float(d[last] + h)), float(p[-1]),
                      int(sessions[hit[0]]) if len(hit) else None, int(ok.sum()))


def welch_variance(a: np.ndarray, b: np.ndarray) -> float:
    """Var(mean b - mean a), as statsmodels computes it (the mSPRT's variance at the last look)."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW
    return float(CompareMeans(DescrStatsW(b), DescrStatsW(a)).std_meandiff_separatevar ** 2)


def sample_ratio(observed: list[int], shares: list[float]) -> float | None:
    """p-value of the sessions per arm against the split (None below 2 arms or no sessions)."""
    total = sum(observed)
    if len(observed) < 2 or total == 0:
        return None
    from scipy.stats import chisquare
    expected = np.asarray(shares, dtype=float) / sum(shares) * total
    if (expected == 0).any():
        mask = expected > 0
        if any(o for o, m in zip(observed, mask) if not m):
            return 0.0                # sessions in an arm with no share: broken
        observed = [o for o, m in zip(observed, mask) if m]
        expected = expected[mask]
        if len(observed) < 2:
            return None
    return float(chisquare(observed, expected).pvalue)
