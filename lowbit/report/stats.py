"""Verdicts with statistics: a Welch test of a linear contrast of group means.

A claim such as "SP beats direct" compares the seeds of two methods; "SP gives most of
the benefit of the multi-round methods" compares SP with the midpoint of direct and the
best multi-round method. Both are contrasts c = Σ w_i mean_i of independent groups
(seeds), tested against a margin with the Welch-Satterthwaite standard error and degrees
of freedom (Welch 1947), which do not assume equal variances:

    se² = Σ w_i² s_i² / n_i,   df = se⁴ / Σ (w_i² s_i² / n_i)² / (n_i - 1)

The verdict of "c > margin" at the 5 % level (two-sided, so the 95 % interval of c):

    holds            the interval lies above the margin
    does not hold    the interval lies below the margin
    inconclusive     the interval contains the margin (within noise)
    needs ≥ 2 seeds  a group has a single run: no variance, no test

>>> c = contrast([[71.0, 72.0, 73.0], [68.0, 69.5, 70.0]], [1, -1])
>>> c.verdict, round(c.estimate, 2), c.n
('holds', 2.83, (3, 3))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOLDS = "holds"
FAILS = "does not hold"
NOISE = "inconclusive"
NEEDS_SEEDS = "needs ≥ 2 seeds"
ALPHA = 0.05


@dataclass(frozen=True)
class Contrast:
    """Σ w_i mean_i with its 95 % interval, Welch t, df, two-sided p, and the verdict."""

    estimate: float
    low: float
    high: float
    t: float
    df: float
    p: float
    n: tuple[int, ...]
    verdict: str

    def text(self, decimals: int = 1) -> str:
        """ "+2.8 (95 % CI +0.9 … +4.7; Welch t = 4.1, df = 3.6, p = 0.019; n = 3, 3)"."""
        from lowbit.report.tables import signed

        ns = ", ".join(map(str, self.n))
        if self.verdict == NEEDS_SEEDS:
            return f"{signed(self.estimate, decimals)} (n = {ns}: no test)"
        p = "< 0.001" if self.p < 0.001 else f"= {self.p:.3f}"
        return (
            f"{signed(self.estimate, decimals)} (95 % CI {signed(self.low, decimals)} … "
            f"{signed(self.high, decimals)}; Welch t = {self.t:.2f}, df = {self.df:.1f}, "
            f"p {p}; n = {ns})"
        )


def _mean_var(xs: Sequence[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    v = sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else math.nan
    return m, v


def contrast(
    groups: Sequence[Sequence[float]], weights: Sequence[float], margin: float = 0.0
) -> Contrast:
    """Welch test of Σ w_i mean(groups[i]) > margin (see the module docstring)."""
    if len(groups) != len(weights) or any(len(g) == 0 for g in groups):
        raise ValueError("one weight per group, and no empty group")
    stats = [_mean_var([float(x) for x in g]) for g in groups]
    n = tuple(len(g) for g in groups)
    est = sum(w * m for w, (m, _) in zip(weights, stats, strict=True))
    if min(n) < 2:
        return Contrast(est, math.nan, math.nan, math.nan, math.nan, math.nan, n, NEEDS_SEEDS)
    parts = [w * w * v / k for w, (_, v), k in zip(weights, stats, n, strict=True)]
    se = math.sqrt(sum(parts))
    d = est - margin
    if se == 0.0:  # identical seeds in every group: the difference is exact
        verdict = HOLDS if d > 0 else FAILS if d < 0 else NOISE
        return Contrast(est, est, est, math.copysign(math.inf, d), math.inf, 0.0, n, verdict)
    df = se**4 / sum(p * p / (k - 1) for p, k in zip(parts, n, strict=True) if p > 0)
    from scipy import stats as st  # scipy ships with scikit-learn; imported only here

    t = d / se
    p = float(2 * st.t.sf(abs(t), df))
    half = float(st.t.ppf(1 - ALPHA / 2, df)) * se
    verdict = NOISE if p >= ALPHA else HOLDS if d > 0 else FAILS
    return Contrast(est, est - half, est + half, t, df, p, n, verdict)
