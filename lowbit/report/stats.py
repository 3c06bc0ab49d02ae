"""Verdicts with statistics: one-sided t tests of a linear contrast, Holm-adjusted.

A claim such as "SP beats direct" is a contrast Δ = Σ w_i mean_i of the seeds' best-epoch
top-1 of two or more methods ("SP gives most of the multi-round benefit": SP minus the
midpoint of direct and the best multi-round method, w = 1, −½, −½), tested one-sided in
the claim's direction against a margin fixed before any data: H1: Δ > margin.

- **paired t** when the methods ran the same seeds (or share ≥ 2, on those; lowbit.report.
  pairing.matched) and each seed's runs share that seed's
  FP network and data (lowbit.report.claims decides): the per-seed contrasts
  c_s = Σ w_i x_{i,s} are one sample, se = sd(c) / √n, df = n − 1. Seed-to-seed variation
  of the FP start and the data subset cancels.
- **Welch t** otherwise (Welch 1947): se² = Σ w_i² s_i² / n_i and the Welch–Satterthwaite
  df = se⁴ / Σ (w_i² s_i² / n_i)² / (n_i − 1), no equal variances assumed.

Over one report's family of claims the p values are Holm-adjusted (Holm 1979), and the
verdict comes from the adjusted p at ALPHA:

    holds            H1: Δ > margin, adjusted p < ALPHA
    does not hold    the opposite one-sided test (H1: Δ < margin), Holm-adjusted over the
                     family's opposite tests, p < ALPHA
    inconclusive     neither; beside it the smallest Δ − margin the test could have
                     detected with power POWER at the level Holm held it to (noncentral t)
    needs ≥ 2 seeds  fewer than two seeds (pairs) somewhere: no variance, no test

>>> t = paired([[71.0, 72.0, 73.5], [69.0, 70.5, 71.0]], [1, -1])
>>> t.kind, round(t.estimate, 2), t.n, round(t.p, 4)
('paired t', 2.0, (3,), 0.0101)
>>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOLDS = "holds"
FAILS = "does not hold"
NOISE = "inconclusive"
NEEDS_SEEDS = "needs ≥ 2 seeds"
ALPHA = 0.05  # family-wise error rate of one report's verdicts (Holm)
POWER = 0.8  # for the detectable effect beside "inconclusive"
PAIRED = "paired t"
WELCH = "Welch t"


@dataclass(frozen=True)
class OneSided:
    """One-sided t test of H1: Δ > margin (Δ in top-1 points); p values nan when untested."""

    estimate: float  # Δ̂ = Σ w_i mean_i
    margin: float
    kind: str  # PAIRED or WELCH
    n: tuple[int, ...]  # paired: (pairs,); Welch: seeds per group
    se: float
    df: float
    p: float  # H1: Δ > margin
    p_opp: float  # H1: Δ < margin
    why: str = ""  # why not paired, e.g. "different seeds"

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p)

    @property
    def t(self) -> float:
        d = self.estimate - self.margin
        return d / self.se if self.se > 0 else math.copysign(math.inf, d)


def _mean_var(xs: Sequence[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    v = sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else math.nan
    return m, v


def _one_sided(est: float, se: float, df: float, margin: float) -> tuple[float, float]:
    """(p of H1: Δ > margin, p of H1: Δ < margin) from t = (est − margin) / se on df."""
    d = est - margin
    if se == 0.0:  # every seed identical: the difference is exact
        return (0.0 if d > 0 else 1.0), (0.0 if d < 0 else 1.0)
    from scipy import stats as st  # scipy ships with scikit-learn; imported only here

    return float(st.t.sf(d / se, df)), float(st.t.cdf(d / se, df))


def _check(groups: Sequence[Sequence[float]], weights: Sequence[float]) -> None:
    if len(groups) != len(weights) or any(len(g) == 0 for g in groups):
        raise ValueError("one weight per group, and no empty group")


def welch(
    groups: Sequence[Sequence[float]],
    weights: Sequence[float],
    margin: float = 0.0,
    why: str = "",
) -> OneSided:
    """Welch test of H1: Σ w_i mean(groups[i]) > margin, groups independent."""
    _check(groups, weights)
    stats = [_mean_var([float(x) for x in g]) for g in groups]
    n = tuple(len(g) for g in groups)
    est = sum(w * m for w, (m, _) in zip(weights, stats, strict=True))
    if min(n) < 2:
        return OneSided(est, margin, WELCH, n, math.nan, math.nan, math.nan, math.nan, why)
    parts = [w * w * v / k for w, (_, v), k in zip(weights, stats, n, strict=True)]
    se = math.sqrt(sum(parts))
    df = (
        se**4 / sum(p * p / (k - 1) for p, k in zip(parts, n, strict=True) if p > 0)
        if se > 0
        else math.inf
    )
    return OneSided(est, margin, WELCH, n, se, df, *_one_sided(est, se, df, margin), why)


def paired(
    groups: Sequence[Sequence[float]], weights: Sequence[float], margin: float = 0.0
) -> OneSided:
    """Paired test of H1: Δ > margin; groups[i][s] is method i's value on seed s."""
    _check(groups, weights)
    if len({len(g) for g in groups}) != 1:
        raise ValueError("a paired test needs one value per seed in every group")
    per_seed = [
        sum(w * float(x) for w, x in zip(weights, xs, strict=True))
        for xs in zip(*groups, strict=True)
    ]
    est, var = _mean_var(per_seed)
    n = (len(per_seed),)
    if n[0] < 2:
        return OneSided(est, margin, PAIRED, n, math.nan, math.nan, math.nan, math.nan)
    se, df = math.sqrt(var / n[0]), float(n[0] - 1)
    return OneSided(est, margin, PAIRED, n, se, df, *_one_sided(est, se, df, margin))


def holm(ps: Sequence[float]) -> list[float]:
    """Holm-adjusted p values, in the order given; nan (no test) stays nan and does not count.

    Sorted ascending, p_(j) becomes max_{i ≤ j} min(1, (m − i + 1) p_(i)).
    """
    order = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out, running = [math.nan] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[i]))
        out[i] = running
    return out


def holm_levels(ps: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """The level Holm holds each raw p to: alpha / (m − j + 1) at its rank j (nan: none)."""
    order = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out = [math.nan] * len(ps)
    for rank, i in enumerate(order):
        out[i] = alpha / (len(order) - rank)
    return out


def detectable(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest Δ − margin a one-sided t test at `alpha` detects with `power`: nc · se, where
    the noncentral t with df and noncentrality nc exceeds t_{1−alpha, df} with that power."""
    if se == 0.0:
        return 0.0
    from scipy import optimize
    from scipy import stats as st

    crit = float(st.t.ppf(1 - alpha, df))

    def gap(nc: float) -> float:
        return float(st.nct.sf(crit, df, nc)) - power

    hi = max(crit, 1.0)
    while gap(hi) < 0:  # power rises to 1 with nc; at df = 1 slowly (a Cauchy-like tail)
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-10)) * se


def verdict(test: OneSided, p_adj: float, p_opp_adj: float, alpha: float = ALPHA) -> str:
    """holds / does not hold / inconclusive / needs ≥ 2 seeds (see the module docstring)."""
    if not test.tested:
        return NEEDS_SEEDS
    return HOLDS if p_adj < alpha else FAILS if p_opp_adj < alpha else NOISE


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def describe(
    test: OneSided, p_adj: float, p_opp_adj: float, level: float, decimals: int = 1
) -> str:
    """ "Δ = +1.8; paired t (n = 3 seeds), one-sided H1: Δ > 0, t = 3.30, df = 2; p = 0.041,
    Holm-adjusted p = 0.120; inconclusive (detectable at power 0.8: 2.3 points)"."""
    from lowbit.report.tables import signed

    ns = ", ".join(map(str, test.n))
    if not test.tested:
        return f"Δ = {signed(test.estimate, decimals)} (n = {ns}: no test)"
    why = f", {'unpaired: ' if test.kind == WELCH else ''}{test.why}" if test.why else ""
    head = f"Δ = {signed(test.estimate, decimals)}; {test.kind} (n = {ns} seeds{why})"
    m = signed(test.margin, decimals) if test.margin else "0"
    t = f"{test.t:.2f}".replace("-", "−")
    df = f"{test.df:.0f}" if test.kind == PAIRED else f"{test.df:.1f}"
    text = (
        f"{head}, one-sided H1: Δ > {m}, t = {t}, df = {df}; p {_p(test.p)}, "
        f"Holm-adjusted p {_p(p_adj)}; "
    )
    v = verdict(test, p_adj, p_opp_adj)
    if v == FAILS:
        return text + f"{v} (opposite H1: Δ < {m}, Holm-adjusted p {_p(p_opp_adj)})"
    if v == NOISE:
        beyond = "" if test.margin == 0 else " beyond the margin"
        d = detectable(test.se, test.df, level)
        return text + f"{v} (detectable at power {POWER}: {d:.{decimals}f} points{beyond})"
    return text + v
