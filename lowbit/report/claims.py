"""The paper's claims (docs/paper.md §6), checked against our own numbers, and the epoch
accounting that makes the methods comparable.

Each claim gets a verdict computed from the best-epoch table -- holds, does not hold, or
not testable here -- with the numbers behind it, so a result that disagrees with the paper
is stated, not hidden.
"""

from __future__ import annotations

import pandas as pd

from lowbit.report.tables import fp_baseline, method_key, signed

# "close to FP" for the W4A4 claim: within this many top-1 points of our FP network
CLOSE_TO_FP = 1.0


def _main(agg: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    sel = (agg["model"] == model) & (agg["dataset"] == dataset) & (agg["role"] == "main")
    return agg[sel]


def _equal_low_bits(label: str) -> bool:
    """ "W2A2", "W4A4": weights and activations at the same bit-width below 32."""
    if not label.startswith("W") or "A" not in label:
        return False
    w, a = label[1:].split("A", 1)
    return w == a and w != "32"


def _verdict(ok: list[bool]) -> str:
    """A claim about every case holds only if every case agrees."""
    if all(ok):
        return "holds"
    return "does not hold" + (f" ({sum(ok)} of {len(ok)} cases agree)" if len(ok) > 1 else "")


def claims(agg: pd.DataFrame, model: str, dataset: str) -> list[str]:
    """One Markdown line per claim: '**verdict**: claim (evidence)'."""
    sub = _main(agg, model, dataset)
    top1 = {(r["method"], r["bits"]): float(r["top1"]) for _, r in sub.iterrows()}
    low_bits = sorted({b for (_, b) in top1 if _equal_low_bits(b)})
    out = []

    # 1. every method improves on direct quantization at the same bit-width
    for bits in low_bits:
        if ("direct", bits) not in top1:
            continue
        d = top1[("direct", bits)]
        others = sorted((m for (m, b) in top1 if b == bits and m not in ("direct", "fp")),
                        key=method_key)  # fmt: skip
        ev = ", ".join(f"{m} {signed(top1[(m, bits)] - d)}" for m in others)
        ok = [top1[(m, bits)] > d for m in others]
        out.append(f"**{_verdict(ok)}** — every method beats direct at {bits} "
                   f"(direct {d:.1f}; {ev or 'no other method ran'})")  # fmt: skip

    # 2. joint KD improves whatever it is added to: X+kd against X, kd against direct
    for bits in low_bits:
        pairs, missing = [], []
        for m in sorted({m for (m, b) in top1 if b == bits and "kd" in m.split("+")},
                        key=method_key):  # fmt: skip
            base = "+".join(p for p in m.split("+") if p != "kd") or "direct"
            if (base, bits) in top1:
                pairs.append((m, base))
            else:
                missing.append(f"{m} (its base {base} was not run)")
        if not pairs:
            continue
        ev = ", ".join(f"{m} vs {b} {signed(top1[(m, bits)] - top1[(b, bits)])}" for m, b in pairs)
        ev += "".join(f"; not compared: {x}" for x in missing)
        ok = [top1[(m, bits)] > top1[(b, bits)] for m, b in pairs]
        out.append(f"**{_verdict(ok)}** — joint KD improves what it is added to at {bits} ({ev})")

    # 3. W4A4 close to (or above) full precision
    fp = fp_baseline(agg, model, dataset)
    w4 = {m: v for (m, b), v in top1.items() if b == "W4A4"}
    if fp is not None and w4:
        best = max(w4, key=w4.get)
        gap = w4[best] - fp
        out.append(f"**{_verdict([gap >= -CLOSE_TO_FP])}** — W4A4 close to or above FP "
                   f"(within {CLOSE_TO_FP:.0f} point): best W4A4 is {best} {w4[best]:.1f} "
                   f"against FP {fp:.1f}, {signed(gap)}")  # fmt: skip
    return out


def budget_lines(nets: pd.DataFrame, model: str, dataset: str) -> list[str]:
    """How many epochs each low-bit result got: the main network's own epochs and the
    budget in network-epochs (every TS/PQ round, every network of joint KD)."""
    sel = (nets["model"] == model) & (nets["dataset"] == dataset) & (nets["role"] == "main")
    sub = nets[sel & (nets["method"] != "fp")]
    if sub.empty or "budget_epochs" not in sub:
        return []
    lines = []
    for bits, grp in sub.groupby("bits", sort=True):
        parts = []
        for m in sorted(grp["method"].unique(), key=method_key):
            r = grp[grp["method"] == m].iloc[0]
            parts.append(f"{m} {r['budget_epochs']:g} ({r['epochs']:g} own)")
        lines.append(f"{bits}: " + ", ".join(parts))
    return lines
