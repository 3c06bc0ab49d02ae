"""The paper's claims get verdicts from the seeds of our runs, with statistics: holds,
does not hold, inconclusive, needs ≥ 2 seeds -- each pinned on a synthetic table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lowbit.report import build_report
from lowbit.report.stats import FAILS, HOLDS, NEEDS_SEEDS, NOISE, contrast
from tests.report.synth import write_run


def test_welch_contrast_matches_scipy():
    from scipy import stats

    a, b = [71.0, 72.5, 73.0, 70.2], [68.0, 69.5, 70.0]
    c = contrast([a, b], [1, -1])
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c.t == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)
    assert c.estimate == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert c.low < c.estimate < c.high and c.verdict == HOLDS


@pytest.mark.parametrize(
    "a,b,margin,verdict",
    [
        ([60.0, 61.0, 62.0], [50.0, 51.0, 52.5], 0.0, HOLDS),  # clearly above
        ([50.0, 51.0, 52.0], [60.0, 61.0, 61.5], 0.0, FAILS),  # clearly below
        ([50.0, 55.0, 52.0], [51.0, 54.0, 53.5], 0.0, NOISE),  # within noise
        ([60.0], [50.0, 51.0, 52.0], 0.0, NEEDS_SEEDS),  # one seed: no test
        ([69.6, 69.7, 69.8], [70.0, 70.2, 70.1], -1.0, HOLDS),  # within 1 point of FP
        ([66.0, 66.5, 65.8], [70.0, 70.2, 70.1], -1.0, FAILS),  # 4 points below FP
    ],
)
def test_the_four_verdicts(a, b, margin, verdict):
    assert contrast([a, b], [1, -1], margin).verdict == verdict


def test_identical_seeds_and_midpoint_contrast():
    assert contrast([[2.0, 2.0], [1.0, 1.0]], [1, -1]).verdict == HOLDS
    assert contrast([[1.0, 1.0], [1.0, 1.0]], [1, -1]).verdict == NOISE
    # SP (60) against the midpoint of direct (50) and TS (58): 60 - 54 = +6
    c = contrast([[60.0, 60.5, 59.5], [50.0, 50.5, 49.5], [58.0, 58.5, 57.5]], [1, -0.5, -0.5])
    assert c.estimate == pytest.approx(6.0) and c.verdict == HOLDS
    assert math.isnan(contrast([[1.0], [2.0]], [1, -1]).p)


SEEDS = {  # method: (stage, bits, best top-1 per seed)
    "fp": ("pretrain", 32, [70.0, 70.4, 69.8]),
    "direct": ("direct", 2, [50.0, 51.0, 49.5]),
    "ts": ("quantize-activations", 2, [55.0, 56.0, 54.5]),  # holds
    "pq": ("bit-decay", 2, [46.0, 47.0, 46.5]),  # does not hold
    "sp": ("stochastic-precision", 2, [52.0, 48.0, 51.0]),  # inconclusive
    "kd": ("distill", 2, [53.0]),  # needs seeds
}


def _report(tmp_path: Path, flag_seed: int | None = None) -> list[str]:
    runs = tmp_path / "runs"
    for method, (stage, bits, values) in SEEDS.items():
        for seed, v in enumerate(values):
            conv = not (method == "ts" and seed == flag_seed)
            write_run(runs, f"{method}/s{seed}", stage=stage, method=method, w_bits=bits,
                      a_bits=bits, seed=seed, best_top1=v, history=False, converged=conv,
                      late_gain=0.2 if conv else 2.5)  # fmt: skip
    build_report(runs, tmp_path / "out", reference_dir=None)
    text = (tmp_path / "out" / "README.md").read_text()
    return [ln for ln in text.splitlines() if ln.startswith("- **")]


def test_claims_in_the_report_carry_their_verdicts(tmp_path: Path) -> None:
    lines = _report(tmp_path)
    verdicts = {ln.split("** — ")[1].split(":")[0]: ln.split("**")[1] for ln in lines}
    assert verdicts["ts beats direct at W2A2 (top-1 gain)"] == HOLDS
    assert verdicts["pq beats direct at W2A2 (top-1 gain)"] == FAILS
    assert verdicts["sp beats direct at W2A2 (top-1 gain)"] == NOISE
    assert verdicts["kd beats direct at W2A2 (top-1 gain)"] == NEEDS_SEEDS
    assert verdicts["joint KD improves direct at W2A2 (kd against direct)"] == NEEDS_SEEDS
    sp_mid = (
        "SP gives most of the multi-round benefit at W2A2 (SP minus the midpoint of direct and ts)"
    )
    assert sp_mid in verdicts
    ts = next(ln for ln in lines if ln.startswith("- **holds** — ts beats"))
    assert "+5.0 (95 % CI" in ts and "Welch t =" in ts and "n = 3, 3" in ts
    assert "flagged" not in ts


def test_a_verdict_on_an_unconverged_run_says_so(tmp_path: Path) -> None:
    lines = _report(tmp_path, flag_seed=1)
    ts = next(ln for ln in lines if "ts beats direct" in ln)
    assert ts.endswith("rests on runs flagged ts W2A2 seed 1 not converged")
