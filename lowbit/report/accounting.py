"""The report's accounting: what the study cost, per seed and in all, and how fast it trained.

A run's own cost is its network-epochs (epochs × networks trained at once: a KD student
beside its teacher is 2 per epoch) and its seconds, wall-clock and CPU (all threads of the
process). Costs are summed over each run's *own* numbers, never `cost_s`/`budget_epochs`,
which add the run it starts from (TS stage 1, say) and would count that run twice.

Wall and CPU seconds are measured on the machine as it was: a run that shared its cores
with other work shows more of both (spinning threads burn CPU too), so network-epochs are
the measure that is the same on any machine; the throughput table's best figure is the
closest to an uncontended one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lowbit.report.collect import numeric
from lowbit.report.tables import MISSING, to_markdown

KINDS = {
    "fp": "full precision, one network",
    "one": "low-bit, one network",
    "two": "low-bit student + FP teacher",
}


def _own(runs: pd.DataFrame) -> pd.DataFrame:
    """runs with `net_epochs` (own epochs × networks) and `kind` (a key of KINDS). A run
    whose metrics.json predates `networks` counts as one network."""
    nets = numeric(runs, "networks").fillna(1.0)
    epochs = numeric(runs, "epochs")
    fp = numeric(runs, "w_bits").eq(32) & numeric(runs, "a_bits").eq(32)  # any tag, any stage
    kind = pd.Series("one", index=runs.index).where(nets < 2, "two").where(~fp, "fp")
    return runs.assign(
        net_epochs=epochs * nets,
        kind=kind,
        fp_epochs=(epochs * nets).where(fp, 0.0),
        wall_s=numeric(runs, "wall_s"),
        cpu_s=numeric(runs, "cpu_s"),
    )


def _total(values: pd.Series, scale: float = 1.0, decimals: int = 0) -> str:
    """The sum; "—" when nothing is known, "≥ sum (k unknown)" when some runs lack it."""
    known = values.dropna()
    if known.empty:
        return MISSING
    text = f"{known.sum() / scale:.{decimals}f}"
    missing = len(values) - len(known)
    return f"≥ {text} ({missing} unknown)" if missing else text


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per seed, then "all": runs, network-epochs (of which FP pretraining), hours."""
    own = _own(runs)
    groups = [(str(s), g) for s, g in own.groupby("seed", sort=True)] + [("all", own)]
    return pd.DataFrame(
        [
            {
                "seed": seed,
                "runs": len(g),
                "network-epochs": _total(g["net_epochs"]),
                "of which FP pretraining": _total(g["fp_epochs"]),
                "wall (h)": _total(g["wall_s"], 3600, 2),
                "CPU (h)": _total(g["cpu_s"], 3600, 2),
            }
            for seed, g in groups
        ]
    )


def throughput_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per kind of run: training images per wall-clock second (evaluation included), median
    and best over its runs."""
    own = _own(runs)
    rate = numeric(own, "images_per_s")
    rows = []
    for key, label in KINDS.items():
        r = rate[own["kind"] == key].dropna()
        if r.empty:
            continue
        rows.append(
            {"run kind": label, "runs": len(r), "images/s median": f"{r.median():.0f}",
             "images/s best": f"{r.max():.0f}"}
        )  # fmt: skip
    return pd.DataFrame(rows)


def render(runs: pd.DataFrame, notes: Path | None = None) -> str:
    """The "## Accounting" section: the cost and throughput tables, then `notes` (the
    pipeline's own Markdown on how the study was sized), when given."""
    rates = throughput_table(runs)
    parts = [
        "## Accounting\n",
        "What every run cost, from its own metrics.json: network-epochs (epochs × networks "
        "trained at once), wall-clock hours and CPU hours (summed over all threads, so up to "
        "threads × wall). Seconds were measured on the machine as it was, so runs that "
        "shared it with other work cost more of them; network-epochs do not depend on the "
        "machine.\n",
        to_markdown(cost_table(runs)),
        "Throughput: training images per wall-clock second of each run, its evaluations "
        "included:\n",
        to_markdown(rates) if not rates.empty else "No run recorded its images/s.\n",
    ]
    if notes is not None:
        parts.append(Path(notes).read_text(encoding="utf-8").strip() + "\n")
    return "\n".join(parts)
