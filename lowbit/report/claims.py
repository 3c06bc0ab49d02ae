"""The paper's claims (docs/paper.md §6), checked against our own runs with statistics.

Each claim is a contrast Δ of the seeds' best-epoch top-1 of two or more methods, tested
one-sided, H1: Δ > margin, with the margin fixed before any data (the MARGIN_*
constants; docs/claims.md). The test is paired by seed when every method of the claim
ran the same seeds (or, sharing ≥ 2, on those) and each seed's runs start from the same
FP network (their init chains end at one run), Welch on every run otherwise
(lowbit.report.stats). The p values of all the claims of one report are Holm-adjusted
together and give one of four verdicts: holds, does not hold, inconclusive, needs ≥ 2
seeds. A verdict that rests on a run flagged "not converged" (it still gained over the
last quarter of its final round) or "constant lr" (a round that never annealed) says so.
Claims:

1. every method improves on direct quantization at the same bit-width (one verdict each);
2. joint KD improves what it is added to (X+kd against X; kd alone against direct);
3. a 4-bit network comes close to full precision: CLOSE_TO_FP_METHOD at W4A4 within
   CLOSE_TO_FP points of FP (non-inferiority);
4. SP gives most of the benefit of the multi-round methods in one stage: SP above the
   midpoint of direct and the best of TS / PQ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from lowbit.report import pairing, stats
from lowbit.report.tables import method_key

# Margins of H1: Δ > margin, in top-1 points, fixed before any data was seen (docs/claims.md).
# "Beats direct" and "KD improves" claim a gain at all; "most of the benefit" claims SP above
# the midpoint of direct and the best multi-round method. "Matches FP" is non-inferiority:
# CLOSE_TO_FP_METHOD at W4A4 less than CLOSE_TO_FP points below our FP network.
MARGIN_BEATS_DIRECT = 0.0
MARGIN_KD_IMPROVES = 0.0
MARGIN_SP_MIDPOINT = 0.0
CLOSE_TO_FP = 1.0
MARGIN_CLOSE_TO_FP = -CLOSE_TO_FP
# The paper makes its 4-bit claim for its full method (reports/reference/paper_claims.csv),
# so that one method is tested: no selection by the data. Where it did not run at W4A4,
# every W4A4 method is tested; "some method within 1 point" holds if the smallest p times
# their number (Bonferroni) passes, and fails only if every one fails (intersection-union).
CLOSE_TO_FP_METHOD = "ts+pq+kd"
MULTI_ROUND = ("ts", "pq")
# The arms of a claim: runs grouped by these columns, each group one method's seeds.
GROUP = ["method", "bits"]
FP_ARM = ("fp", "FP")  # the plain FP network's arm
# The shared-FP paired test's note: the verdict is about that one FP network, whose own
# seed-to-seed spread the study did not measure
SHARED_FP = "one FP network shared by every seed: its top-1 is a constant"
INTRO = (
    "### The paper's claims against these numbers\n\n"
    "Verdicts from the seeds of each method (docs/paper.md §6; rules and margins, fixed "
    "before any data, in docs/claims.md), whatever they say: a one-sided t test of the "
    "claim's difference in best-epoch top-1 against its margin, **paired** by seed where "
    "the methods ran from the same FP network (on the seeds every method ran, when some ran "
    "more and ≥ 2 are shared), **Welch** on every run where not; p values "
    "Holm-adjusted over all the claims of this report. **holds**: adjusted p < 0.05; "
    "**does not hold**: the opposite one-sided test's adjusted p < 0.05; **inconclusive**: "
    "neither (beside it, the smallest difference the test could detect with power 0.8); "
    "**needs ≥ 2 seeds**: a method has one run:"
)


def _main(nets: pd.DataFrame, model: str, dataset: str, setting: str = "") -> pd.DataFrame:
    """The main networks of one model, dataset and setting (lowbit.identity: runs of
    other quantizers or policies are never pooled), with the plain FP network beside
    every setting's runs: the claims compare against it, as the paper does."""
    sel = (nets["model"] == model) & (nets["dataset"] == dataset) & (nets["role"] == "main")
    setting_of = nets["setting"] if "setting" in nets else pd.Series("", index=nets.index)
    # by base_method: a clipped FP network ("fp [clip start]") is its setting's start, not
    # the reference, and would otherwise join the plain one in the FP arm
    base = nets["base_method"] if "base_method" in nets else nets["method"]
    fp = base == "fp"
    sub = nets[sel & ((~fp & (setting_of == setting)) | (fp & (setting_of == "")))]
    # within one setting, a method is named without it
    return sub.assign(method=sub["base_method"]) if "base_method" in sub else sub


def _equal_low_bits(label: str) -> bool:
    """ "W2A2", "W4A4": weights and activations at the same bit-width below 32."""
    if not label.startswith("W") or "A" not in label:
        return False
    w, a = label[1:].split("A", 1)
    return w == a and w != "32"


@dataclass(frozen=True)
class Claim:
    """One verdict line before Holm: the claim, its test, the flags of the runs it rests on.
    `key` names the hypothesis (two claims that are one test count once in Holm's family);
    `choices`: the number of candidates it was chosen from (its level is divided by it)."""

    text: str
    test: stats.OneSided
    flags: tuple[str, ...]
    key: tuple
    choices: int = 1


class _Runs:
    """Per GROUP (method, bits): the seeds' best-epoch top-1, FP starts and run flags."""

    def __init__(self, sub: pd.DataFrame, where: tuple[str, str]) -> None:
        # an FP network is its own start
        sub = sub.assign(start=sub["root"] == pd.Series(pairing.run_paths(sub), index=sub.index))
        self.where = where
        self.arms: dict[tuple[str, str], pd.DataFrame] = {}
        self.flags: dict[tuple[str, str], tuple[str, ...]] = {}
        for (method, bits), grp in sub.groupby(GROUP, sort=False):
            self.arms[(method, bits)] = grp[["seed", "best_top1", "root", "start"]]
            self.flags[(method, bits)] = tuple(
                f"{method} {bits} seed {r['seed']} {why}"
                for _, r in grp.iterrows()
                for col, why in (("converged", "not converged"), ("annealed", "constant lr"))
                if col in grp and r[col] is False
            )

    def mean(self, key: tuple[str, str]) -> float:
        return float(self.arms[key]["best_top1"].mean())

    def methods(self, bits: str) -> list[str]:
        return sorted((m for (m, b) in self.arms if b == bits), key=method_key)

    def test(
        self, keys: list[tuple[str, str]], weights: list[float], margin: float
    ) -> stats.OneSided:
        arms = [self.arms[k] for k in keys]
        # the FP arm alone may be a constant: a method with one seed is no shared network
        fp = keys.index(FP_ARM) if FP_ARM in keys else None
        # one FP run (a network shared by every seed) is a constant, not an arm to match
        out = pairing.matched(arms, fp if fp is not None and len(arms[fp]) == 1 else None)
        left = [f"{m} {b} seed {s}" for (m, b), o in zip(keys, out, strict=True) for s in sorted(o)]
        if left:  # paired on the seeds every arm ran, if they pair at all
            shared = [a[~a["seed"].isin(o)] for a, o in zip(arms, out, strict=True)]
            test = self._test(shared, fp, weights, margin)
            if test.kind == stats.PAIRED:
                note = f"seeds every arm ran; not used: {', '.join(left)}"
                return dataclasses.replace(test, why="; ".join(filter(None, [test.why, note])))
            # Welch uses every run; the reason is why the shared seeds did not pair
            return dataclasses.replace(self._test(arms, fp, weights, margin), why=test.why)
        return self._test(arms, fp, weights, margin)

    @staticmethod
    def _test(arms: list[pd.DataFrame], fp: int | None, weights: list[float],
              margin: float) -> stats.OneSided:  # fmt: skip
        if fp is not None and pairing.shared_fp(arms) == fp:  # one FP network, every seed's
            seeds = sorted(next(a for a in arms if len(a) > 1)["seed"])
            aligned = [[float(a["best_top1"].iloc[0])] * len(seeds) if len(a) == 1 else
                       list(a.set_index("seed").loc[seeds, "best_top1"]) for a in arms]  # fmt: skip
            return dataclasses.replace(stats.paired(aligned, weights, margin), why=SHARED_FP)
        why = pairing.unpaired(arms)
        if why:
            return stats.welch([list(a["best_top1"]) for a in arms], weights, margin, why)
        seeds = sorted(arms[0]["seed"])
        aligned = [list(a.set_index("seed").loc[seeds, "best_top1"]) for a in arms]
        return stats.paired(aligned, weights, margin)

    def claim(self, text: str, keys: list[tuple[str, str]], weights: list[float],
              margin: float) -> Claim:  # fmt: skip
        flags = tuple(f for k in keys for f in self.flags[k])
        key = (*self.where, tuple(keys), tuple(weights), margin)
        return Claim(text, self.test(keys, weights, margin), flags, key)


def _plain(methods: list[str]) -> list[str]:
    """The methods proper: no fp, no tagged variants ("direct (long)")."""
    return [m for m in methods if m != "fp" and " " not in m]


def _vs_direct_and_kd(runs: _Runs, bits: str) -> list[Claim]:
    methods = runs.methods(bits)
    out = []
    if "direct" in methods:
        for m in (m for m in _plain(methods) if m != "direct"):
            out.append(runs.claim(f"{m} beats direct at {bits} (top-1 gain)",
                                  [(m, bits), ("direct", bits)], [1, -1],
                                  MARGIN_BEATS_DIRECT))  # fmt: skip
    for m in (m for m in methods if "kd" in m.split("+")):
        base = "+".join(p for p in m.split("+") if p != "kd") or "direct"
        if base in methods:
            out.append(runs.claim(f"joint KD improves {base} at {bits} ({m} against {base})",
                                  [(m, bits), (base, bits)], [1, -1],
                                  MARGIN_KD_IMPROVES))  # fmt: skip
    multi = [m for m in MULTI_ROUND if m in methods]
    if "sp" in methods and "direct" in methods and multi:
        best = max(multi, key=lambda m: runs.mean((m, bits)))  # biased against SP: see docs
        out.append(runs.claim(
            f"SP gives most of the multi-round benefit at {bits} (SP minus the midpoint "
            f"of direct and {best})",
            [("sp", bits), ("direct", bits), (best, bits)], [1, -0.5, -0.5],
            MARGIN_SP_MIDPOINT))  # fmt: skip
    return out


def _close_to_fp(runs: _Runs) -> list[Claim]:
    w4 = _plain(runs.methods("W4A4"))
    if FP_ARM not in runs.arms or not w4:
        return []
    cands = [CLOSE_TO_FP_METHOD] if CLOSE_TO_FP_METHOD in w4 else w4
    text = f"W4A4 within {CLOSE_TO_FP:g} point of FP ({{}} at W4A4 minus FP, non-inferiority)"
    found = [
        runs.claim(text.format(m), [(m, "W4A4"), FP_ARM], [1, -1], MARGIN_CLOSE_TO_FP)
        for m in cands
    ]
    if len(found) == 1:
        return found
    tested = [c for c in found if c.test.tested]
    if not tested:
        return [max(found, key=lambda c: c.test.estimate)]
    best = min(tested, key=lambda c: c.test.p)
    k = len(found)
    # union (some method within the margin): Bonferroni over the k; "does not hold" needs
    # every one significantly below it (intersection-union: the largest opposite p)
    p_opp = max(c.test.p_opp for c in tested) if len(tested) == k else 1.0
    test = dataclasses.replace(best.test, p=min(1.0, k * best.test.p), p_opp=p_opp)
    note = f"{best.text[:-1]}; the smallest p of {k} W4A4 methods, times {k})"
    flags = tuple(f for c in found for f in c.flags)
    return [Claim(note, test, flags, (*runs.where, "close to FP", k), choices=k)]


def claims_of(nets: pd.DataFrame, model: str, dataset: str, setting: str = "") -> list[Claim]:
    """The claims of one model, dataset and setting, tested but not yet Holm-adjusted."""
    # init chains over every setting: a clipped FP network starts its setting's runs but
    # is no arm of its claims
    mine = (nets["model"] == model) & (nets["dataset"] == dataset) & (nets["role"] == "main")
    nets = nets[mine].assign(root=pairing.fp_roots(nets[mine]))
    runs = _Runs(_main(nets, model, dataset, setting), (model, dataset, setting))
    bits_all = {b for (_, b) in runs.arms}
    out = []
    for bits in sorted(b for b in bits_all if _equal_low_bits(b)):
        out += _vs_direct_and_kd(runs, bits)
    return out + _close_to_fp(runs)


def verdict_lines(nets: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Per (model, dataset): one Markdown line per claim, '**verdict** — claim: statistics',
    the p values Holm-adjusted over every claim of `nets` (one report's family)."""
    cols = ["model", "dataset", "setting"] if "setting" in nets else ["model", "dataset"]
    groups = nets[nets["role"] == "main"][cols].drop_duplicates().itertuples(index=False)
    found = {tuple(g): claims_of(nets, *g) for g in groups}
    tests = {c.key: c.test for cs in found.values() for c in cs}  # one test per hypothesis
    keys = list(tests)
    ps = [tests[k].p for k in keys]
    adj = dict(zip(keys, stats.holm(ps), strict=True))
    adj_opp = dict(zip(keys, stats.holm([tests[k].p_opp for k in keys]), strict=True))
    level = dict(zip(keys, stats.holm_levels(ps), strict=True))
    out: dict[tuple[str, str], list[str]] = {}
    for where, cs in found.items():
        lines = out.setdefault(where[:2], [])
        prefix = f"[{where[2]}] " if len(where) > 2 and where[2] else ""
        for c in cs:
            k = c.key
            v = stats.verdict(c.test, adj[k], adj_opp[k])
            body = stats.describe(c.test, adj[k], adj_opp[k], level[k] / c.choices)
            note = f"; rests on runs flagged {', '.join(c.flags)}" if c.flags else ""
            lines.append(f"**{v}** — {prefix}{c.text}: {body}{note}")
    return out
