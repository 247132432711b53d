"""Seed statistics: the mean with a 95% t-interval, and Welch's t-test for an ordering between two variants."""

from __future__ import annotations

import math
from collections.abc import Sequence

ALPHA = 0.05


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, low, high); low and high are None with fewer than two values (no spread to estimate)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p of Welch's t-test; None when it cannot be computed (one value, or no spread in either)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 0.0 if a[0] != b[0] else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def verdict(difference: float, p: float | None, claimed: bool) -> str:
    """One word for the ordering ``better > worse`` given the measured mean difference and Welch's p."""
    if p is None:
        return "untested"  # one seed: no spread, no test
    if p >= ALPHA:
        return "unresolved"
    if claimed:
        return "holds" if difference > 0 else "reversed"
    return "higher" if difference > 0 else "lower"


def overlaps(a: tuple[float | None, float | None], b: tuple[float | None, float | None]) -> bool | None:
    if None in a or None in b:
        return None
    return not (a[1] < b[0] or b[1] < a[0])


__all__ = ["ALPHA", "overlaps", "t_interval", "verdict", "welch_p"]
