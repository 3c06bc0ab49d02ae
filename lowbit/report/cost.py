"""Cost and convergence beside every result, and the equal-cost view.

The paper's comparison (paper.md §5): every method's final-precision network trains with
direct's recipe; TS stage 1, PQ's earlier rounds and the KD teacher are extra cost. The
results table therefore shows, per method and bit-width, the accuracy over seeds next to
what it cost (network-epochs after FP pretraining, and training seconds: wall-clock and
CPU, all threads) and whether each seed converged. The equal-cost view, a second table
and not the paper's comparison, sets each method beside the direct run of the same bits
that spent at least as much.
"""

from __future__ import annotations

import pandas as pd

from lowbit.report.tables import MISSING, bits_key, method_key, signed
from lowbit.training.convergence import LATE_GAIN_ALPHA, LATE_GAIN_LIMIT

GROUP = ["method", "bits", "w_bits", "a_bits"]
CONVERGED = f"converged (gain ≤ {LATE_GAIN_LIMIT:g} or p ≥ {LATE_GAIN_ALPHA:g})"


def _main(nets: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    sel = (nets["model"] == model) & (nets["dataset"] == dataset) & (nets["role"] == "main")
    return nets[sel]


def _pm(values: pd.Series, decimals: int = 1) -> str:
    v = values.dropna()
    if v.empty:
        return MISSING
    text = f"{v.mean():.{decimals}f}"
    return text + (f" ± {v.std():.{decimals}f}" if len(v) > 1 and v.std() > 0 else "")


def _flagged(r: pd.Series) -> str:
    """ "seed 1 +1.8" or, where McNemar's p was counted, "seed 1 +1.8, p 0.012"."""
    p = r.get("late_p")
    return f"seed {r['seed']} {signed(r['late_gain'])}" + ("" if pd.isna(p) else f", p {p:.3f}")


def _converged(grp: pd.DataFrame) -> str:
    """ "3/3", "2/3 (not: seed 1 +1.8, p 0.012)", or "?" where the late gain could not be
    measured."""
    if "converged" not in grp or grp["converged"].isna().all():
        return "?"
    ok = grp["converged"].eq(True)
    bad = [_flagged(r) for _, r in grp[grp["converged"].eq(False)].iterrows()]
    return f"{int(ok.sum())}/{len(grp)}" + (f" (not: {', '.join(bad)})" if bad else "")


def _ordered(sub: pd.DataFrame):
    keys = sorted(
        sub.groupby(GROUP, sort=False).groups,
        key=lambda k: (bits_key((int(k[2]), int(k[3]))), method_key(k[0])),
    )
    return [(k, sub[(sub[GROUP] == pd.Series(k, index=GROUP)).all(axis=1)]) for k in keys]


def results_table(nets: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    """One row per (bits, method): accuracy over seeds, convergence, cost."""
    rows = []
    for (method, bits, _, _), grp in _ordered(_main(nets, model, dataset)):
        flags = []
        if "annealed" in grp and grp["annealed"].eq(False).any():
            flags.append("constant lr")
        rows.append(
            {
                "bits": bits,
                "method": method,
                "seeds": len(grp),
                "best top-1": _pm(grp["best_top1"]),
                "final top-1": _pm(grp["top1"]),
                CONVERGED: _converged(grp),
                "late gain": _pm(grp.get("late_gain", pd.Series(dtype=float)), 2),
                # beside the late gain: a run that ends far below its training accuracy
                # did not underfit; one that ends near it at a low level did
                "final train top-1": _pm(grp.get("train_top1", pd.Series(dtype=float))),
                "cost (net-epochs)": _pm(grp["budget_epochs"], 0),
                "of which extra": _pm(grp.get("extra_epochs", pd.Series(dtype=float)), 0),
                "cost (wall s)": _pm(grp.get("cost_s", grp["wall_s"]), 0),
                "cost (CPU s)": _pm(grp.get("cost_cpu_s", pd.Series(dtype=float)), 0),
                "flags": ", ".join(flags),
            }
        )
    return pd.DataFrame(rows)


def equal_cost_table(nets: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    """Each method beside the cheapest direct run (any tag) of its bits that cost at least
    as many network-epochs; if none did, the costliest one, marked "<"."""
    sub = _main(nets, model, dataset)
    mean = sub.groupby(["method", "bits"], sort=False)[["best_top1", "budget_epochs"]].mean()
    rows = []
    for (method, bits, _, _), _grp in _ordered(sub):
        if method == "fp" or method.startswith("direct"):
            continue
        directs = [(m, r) for (m, b), r in mean.iterrows() if b == bits and m.startswith("direct")]
        if not directs:
            continue
        own = mean.loc[(method, bits)]
        enough = [d for d in directs if d[1]["budget_epochs"] >= own["budget_epochs"]]
        pick = min(enough, key=lambda d: d[1]["budget_epochs"]) if enough else max(
            directs, key=lambda d: d[1]["budget_epochs"])  # fmt: skip
        rows.append(
            {
                "bits": bits,
                "method": method,
                "cost (net-epochs)": f"{own['budget_epochs']:.0f}",
                "best top-1": f"{own['best_top1']:.1f}",
                "direct run": pick[0],
                "its cost": ("" if enough else "< ") + f"{pick[1]['budget_epochs']:.0f}",
                "its best top-1": f"{pick[1]['best_top1']:.1f}",
                "Δ top-1": signed(own["best_top1"] - pick[1]["best_top1"]),
            }
        )
    return pd.DataFrame(rows)
