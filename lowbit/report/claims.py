"""The paper's claims (docs/paper.md §6), checked against our own runs with statistics.

Each claim compares the best-epoch top-1 of the seeds of two or more methods with a
Welch test (lowbit.report.stats) and gets one of four verdicts: holds, does not hold,
inconclusive, needs ≥ 2 seeds. A verdict that rests on a run flagged "not converged"
(it still gained over the last quarter of its final round) or "constant lr" (a round
that never annealed) says so. Claims:

1. every method improves on direct quantization at the same bit-width (one verdict each);
2. joint KD improves what it is added to (X+kd against X; kd alone against direct);
3. a 4-bit network comes close to full precision: the best W4A4 method within
   CLOSE_TO_FP points of FP;
4. SP gives most of the benefit of the multi-round methods in one stage: SP above the
   midpoint of direct and the best of TS / PQ.
"""

from __future__ import annotations

import pandas as pd

from lowbit.report.stats import contrast
from lowbit.report.tables import method_key

# "close to FP" for the W4A4 claim: within this many top-1 points of our FP network
CLOSE_TO_FP = 1.0
MULTI_ROUND = ("ts", "pq")


def _main(nets: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    sel = (nets["model"] == model) & (nets["dataset"] == dataset) & (nets["role"] == "main")
    return nets[sel]


def _equal_low_bits(label: str) -> bool:
    """ "W2A2", "W4A4": weights and activations at the same bit-width below 32."""
    if not label.startswith("W") or "A" not in label:
        return False
    w, a = label[1:].split("A", 1)
    return w == a and w != "32"


class _Runs:
    """Per (method, bits): the seeds' best-epoch top-1 and the flags of their runs."""

    def __init__(self, sub: pd.DataFrame) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}
        self.flags: dict[tuple[str, str], list[str]] = {}
        for (method, bits), grp in sub.groupby(["method", "bits"], sort=False):
            self.values[(method, bits)] = [float(v) for v in grp["best_top1"]]
            self.flags[(method, bits)] = [
                f"{method} {bits} seed {r['seed']} {why}"
                for _, r in grp.iterrows()
                for col, why in (("converged", "not converged"), ("annealed", "constant lr"))
                if col in grp and r[col] is False
            ]

    def mean(self, method: str, bits: str) -> float:
        v = self.values[(method, bits)]
        return sum(v) / len(v)

    def methods(self, bits: str) -> list[str]:
        return sorted((m for (m, b) in self.values if b == bits), key=method_key)

    def line(self, claim: str, keys: list[tuple[str, str]], weights: list[float],
             margin: float = 0.0) -> str:  # fmt: skip
        c = contrast([self.values[k] for k in keys], weights, margin)
        flags = [f for k in keys for f in self.flags[k]]
        note = f"; rests on runs flagged {', '.join(flags)}" if flags else ""
        return f"**{c.verdict}** — {claim}: {c.text()}{note}"


def claims(nets: pd.DataFrame, model: str, dataset: str) -> list[str]:
    """One Markdown line per claim and case: '**verdict** — claim: statistics'."""
    runs = _Runs(_main(nets, model, dataset))
    bits_all = {b for (_, b) in runs.values}
    out = []
    for bits in sorted(b for b in bits_all if _equal_low_bits(b)):
        methods = runs.methods(bits)
        if "direct" in methods:
            for m in (m for m in methods if m not in ("direct", "fp") and " " not in m):
                out.append(runs.line(f"{m} beats direct at {bits} (top-1 gain)",
                                     [(m, bits), ("direct", bits)], [1, -1]))  # fmt: skip
        for m in (m for m in methods if "kd" in m.split("+")):
            base = "+".join(p for p in m.split("+") if p != "kd") or "direct"
            if base in methods:
                out.append(runs.line(f"joint KD improves {base} at {bits} ({m} against {base})",
                                     [(m, bits), (base, bits)], [1, -1]))  # fmt: skip
        multi = [m for m in MULTI_ROUND if m in methods]
        if "sp" in methods and "direct" in methods and multi:
            best = max(
                multi, key=lambda m: sum(runs.values[(m, bits)]) / len(runs.values[(m, bits)])
            )
            out.append(runs.line(
                f"SP gives most of the multi-round benefit at {bits} (SP minus the midpoint "
                f"of direct and {best})",
                [("sp", bits), ("direct", bits), (best, bits)], [1, -0.5, -0.5]))  # fmt: skip
    out += _close_to_fp(runs)
    return out


def _close_to_fp(runs: _Runs) -> list[str]:
    w4 = [m for m in runs.methods("W4A4") if m != "fp" and " " not in m]
    if ("fp", "FP") not in runs.values or not w4:
        return []
    best = max(w4, key=lambda m: runs.mean(m, "W4A4"))
    claim = (f"W4A4 within {CLOSE_TO_FP:.0f} point of FP (best W4A4, {best}, minus FP; "
             f"holds if above −{CLOSE_TO_FP:.0f})")  # fmt: skip
    return [runs.line(claim, [(best, "W4A4"), ("fp", "FP")], [1, -1], margin=-CLOSE_TO_FP)]
