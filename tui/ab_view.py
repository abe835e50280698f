"""What the Serve screen shows of an A/B server, without widgets (tested directly): the arms' rows
from `engine.ab.report` (requests, CTR with its interval, conversions) and the sequential test's
verdict and sample-ratio check, in words."""

from __future__ import annotations

from typing import Any

ARM_COLUMNS = (("arm", 4), ("target", 14), ("share", 5), ("sessions", 8), ("lists", 6), ("CTR", 6),
               ("interval", 13), ("conv.", 6))


def read_report(ws, name: str) -> dict[str, Any] | None:
    """The experiment's report, or None while its logs cannot be read (nothing logged yet)."""
    from engine.ab.report import experiment_report
    try:
        return experiment_report(ws, name)
    except Exception:                 # a file being rotated, nothing yet: the next poll shows it
        return None


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def arm_rows(rep: dict[str, Any], shares: dict[str, float] | None = None) -> list[tuple[str, ...]]:
    """One row per arm: name, target, traffic share, sessions, lists served (impressions), CTR@k and
    its interval, conversion rate."""
    shares = shares or {}
    total = sum(a["weight"] for a in rep["arms"]) or 1.0
    rows = []
    for a in rep["arms"]:
        lo, hi = a["ctr_interval"]
        share = shares.get(a["arm"], a["weight"] / total)
        rows.append((a["arm"], a["target"], f"{100 * share:.0f}%", f"{a['sessions']:,}", f"{a['impressions']:,}",
                     _pct(a["ctr"]), "-" if lo is None else f"{100 * lo:.1f}-{100 * hi:.1f}%",
                     _pct(a["conversion_rate"])))
    return rows


def verdict_lines(rep: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, style) lines: each test's verdict with its difference and always-valid p, then the
    sample-ratio check."""
    alpha = rep["config"]["alpha"]
    out = []
    for t in rep["tests"]:
        if t["difference"] is None:
            out.append((f"{t['arm']} vs {t['control']}: waiting for {rep['config']['min_sessions']} sessions per arm",
                        "dim"))
            continue
        lo, hi = t["interval"]
        text = (f"{t['arm']} vs {t['control']}: {t['verdict']}, session CTR {100 * t['difference']:+.1f} pts "
                f"[{100 * lo:.1f}, {100 * hi:.1f}], p {t['p_value']:.3g} (always valid, alpha {alpha:g})")
        out.append((text, "bold green" if t["verdict"] != "no difference yet" else ""))
    srm = rep["srm"]
    if srm["mismatch"]:
        out.append((f"sample ratio mismatch (p {srm['p_value']:.2g}): the split is broken, do not trust the "
                    f"comparison", "bold red"))
    elif srm["p_value"] is not None:
        out.append((f"sample ratio ok (p {srm['p_value']:.2g}); experiment {rep['experiment']}, phase {rep['phase']}",
                    "dim"))
    return out
