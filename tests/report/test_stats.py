"""The statistics behind the verdicts, each rule against an independent computation: paired
and Welch one-sided t tests (scipy.stats), the margin, Holm (by hand), the detectable
effect (power by numerical integration over the noncentral t's definition)."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from lowbit.report.stats import (
    FAILS,
    HOLDS,
    NEEDS_SEEDS,
    NOISE,
    PAIRED,
    WELCH,
    describe,
    detectable,
    holm,
    holm_levels,
    paired,
    verdict,
    welch,
)

A = [71.0, 72.5, 73.0, 70.2]
B = [68.0, 69.5, 70.0, 68.9]


def test_paired_is_scipy_ttest_rel_one_sided():
    t = paired([A, B], [1, -1])
    greater = stats.ttest_rel(A, B, alternative="greater")
    less = stats.ttest_rel(A, B, alternative="less")
    assert t.kind == PAIRED and t.n == (4,) and t.df == 3
    assert t.t == pytest.approx(greater.statistic)
    assert t.p == pytest.approx(greater.pvalue) and t.p_opp == pytest.approx(less.pvalue)
    assert t.estimate == pytest.approx(sum(A) / 4 - sum(B) / 4)


def test_welch_is_scipy_ttest_ind_one_sided():
    a, b = A, B[:3]
    t = welch([a, b], [1, -1])
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert t.kind == WELCH and t.n == (4, 3)
    assert t.t == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue)
    assert t.df == pytest.approx(ref.df)


def test_one_sided_in_the_claims_direction():
    up, down = paired([A, B], [1, -1]), paired([B, A], [1, -1])
    two_sided = stats.ttest_rel(A, B).pvalue
    assert up.p == pytest.approx(two_sided / 2)  # half the two-sided p, in its direction
    assert down.p == pytest.approx(1 - two_sided / 2) and down.p > 0.5
    assert down.p_opp == pytest.approx(up.p)


def test_the_margin_is_the_null_value():
    # non-inferiority, H1: Δ > −1: the one-sample test of the differences against −1
    diffs = [-0.2, -0.4, -0.3, -0.1]  # Δ = −0.25: below 0, within 1 point
    low = [b + d for b, d in zip(B, diffs, strict=True)]
    t = paired([low, B], [1, -1], margin=-1.0)
    ref = stats.ttest_1samp(diffs, popmean=-1.0, alternative="greater")
    assert t.p == pytest.approx(ref.pvalue) and t.p < 0.05  # within 1 point: H1 holds
    assert paired([low, B], [1, -1]).p > 0.5  # against 0 it would not
    w = welch([low, B], [1, -1], margin=-1.0)
    shifted = stats.ttest_ind([x + 1.0 for x in low], B, equal_var=False, alternative="greater")
    assert w.p == pytest.approx(shifted.pvalue)


def test_three_group_contrast_paired_on_per_seed_contrasts():
    sp, direct, pq = [60.0, 62.0, 58.0], [50.0, 53.0, 49.0], [58.0, 61.0, 56.0]
    t = paired([sp, direct, pq], [1, -0.5, -0.5])
    per_seed = [s - (d + q) / 2 for s, d, q in zip(sp, direct, pq, strict=True)]  # 6, 5, 5.5
    ref = stats.ttest_1samp(per_seed, 0.0, alternative="greater")
    assert t.estimate == pytest.approx(5.5) and t.p == pytest.approx(ref.pvalue)
    assert t.se == pytest.approx(stats.tstd(per_seed) / math.sqrt(3))


def test_paired_passes_where_welch_does_not():
    # seeds differ by 10 points (each seed's FP start), the method gains ~1 point on each
    direct = [60.0, 70.0, 80.0]
    method = [61.0, 71.2, 80.8]
    assert paired([method, direct], [1, -1]).p < 0.01
    assert welch([method, direct], [1, -1]).p > 0.4


def test_holm_by_hand():
    ps = [0.01, 0.04, 0.03, 0.005, math.nan]
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06
    adj = holm(ps)
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adj[4])
    levels = holm_levels(ps, alpha=0.05)
    assert levels[:4] == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1


def _power(delta: float, se: float, df: float, alpha: float) -> float:
    """P(T > t_{1−α}) for T = (Z + δ/se) / √(V/df), V ~ χ²_df: by quadrature over V."""
    crit = stats.t.ppf(1 - alpha, df)

    def f(v: float) -> float:
        return stats.norm.cdf(delta / se - crit * math.sqrt(v / df)) * stats.chi2.pdf(v, df)

    return integrate.quad(f, 0, math.inf, limit=200)[0]


@pytest.mark.parametrize("se,df,alpha", [(0.4, 2.0, 0.05), (1.3, 3.7, 0.01), (0.2, 5.0, 0.005)])
def test_detectable_effect_has_power_0_8(se, df, alpha):
    d = detectable(se, df, alpha)
    assert _power(d, se, df, alpha) == pytest.approx(0.8, abs=1e-6)
    assert _power(0.95 * d, se, df, alpha) < 0.8  # the smallest such effect


def test_detectable_effect_tends_to_the_normal_approximation():
    se = 0.5  # many seeds: (z_{1−α} + z_{0.8}) · se
    z = stats.norm.ppf(0.95) + stats.norm.ppf(0.8)
    assert detectable(se, 10_000.0, 0.05) == pytest.approx(z * se, rel=1e-3)
    assert detectable(0.0, 2.0, 0.05) == 0.0


def test_verdicts_come_from_the_adjusted_p():
    t = paired([A, B], [1, -1])  # raw p ≈ 0.004
    assert verdict(t, 0.004, 0.99) == HOLDS
    assert verdict(t, 0.08, 0.99) == NOISE  # raw p passes, adjusted does not
    assert verdict(t, 0.99, 0.01) == FAILS  # the opposite test is significant
    assert verdict(paired([[1.0], [2.0]], [1, -1]), 0.0, 0.0) == NEEDS_SEEDS
    exact = paired([[2.0, 3.0], [1.0, 2.0]], [1, -1])  # every seed +1: no variance
    assert (exact.p, exact.p_opp) == (0.0, 1.0)


def test_a_line_says_test_p_adjusted_p_and_detectable_effect():
    t = paired([[71.0, 72.0, 74.0], [70.0, 70.5, 71.0]], [1, -1])
    line = describe(t, 0.12, 0.95, level=0.025)
    d = detectable(t.se, 2.0, 0.025)
    assert line.startswith("Δ = +1.8; paired t (n = 3 seeds), one-sided H1: Δ > 0, t = ")
    assert f"p = {t.p:.3f}, Holm-adjusted p = 0.120; inconclusive" in line
    assert line.endswith(f"(detectable at power 0.8: {d:.1f} points)")
    w = welch([[66.0, 66.5], [70.0, 70.2, 70.1]], [1, -1], margin=-1.0, why="different seeds")
    line = describe(w, 1.0, 0.002, level=0.05)
    assert "Welch t (n = 2, 3 seeds, unpaired: different seeds), one-sided H1: Δ > −1.0" in line
    assert line.endswith("does not hold (opposite H1: Δ < −1.0, Holm-adjusted p = 0.002)")
    assert describe(paired([[1.0], [2.0]], [1, -1]), math.nan, math.nan, math.nan) == (
        "Δ = −1.0 (n = 1: no test)"
    )
