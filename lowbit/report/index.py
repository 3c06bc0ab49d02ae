"""The generated report, out_dir/README.md: provenance, tables, plots, references, decisions.

Every link is relative to out_dir and points at a file that exists when the README is written,
so the report reads the same on GitHub, in an editor preview, or in a copied folder. No
generation time is written: the same runs give the same README (DVC sees no change).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lowbit.report import accounting
from lowbit.report.claims import INTRO as CLAIMS_INTRO
from lowbit.report.collect import stack_text
from lowbit.report.decisions import decisions
from lowbit.report.plots import Plot
from lowbit.report.recipes import flat_config
from lowbit.report.reference import COLUMNS as REFERENCE_COLUMNS
from lowbit.report.reference import PUBLISHED
from lowbit.report.tables import MISSING, Table, to_markdown


@dataclass
class Section:
    """One (model, dataset): its tables, the vs-direct lines and its figures."""

    model: str
    dataset: str
    tables: list[tuple[Table, Path, Path]]  # (table, .md path, .csv path)
    vs_direct: list[str]
    plots: list[Plot] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)  # the paper's claims, with verdicts
    # (frame, csv path) of the results table (accuracy, convergence, cost per method)
    results: tuple[pd.DataFrame, Path] | None = None
    equal_cost: tuple[pd.DataFrame, Path] | None = None  # the second, equal-cost view


def rel(path: Path, out_dir: Path) -> str:
    """A link target relative to out_dir, POSIX slashes, <...> when it has spaces."""
    text = Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()
    return f"<{text}>" if " " in text else text


def _n_runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _counts(runs: pd.DataFrame, col: str) -> str:
    counts = runs[col].astype(str).value_counts(sort=False).sort_index()
    return ", ".join(f"`{k}` ({_n_runs(v)})" for k, v in counts.items())


def _commit_state(runs: pd.DataFrame) -> pd.Series:
    """`<commit>`, `<commit> (changed: a.sh, b.py)` or, for runs that did not list the
    changed files, `<commit> (dirty)`: a reader can judge whether a change touched code."""
    files = runs.get("dirty_files", pd.Series("", index=runs.index)).fillna("").astype(str)
    changed = (" (changed: " + files + ")").where(files != "", " (dirty)")
    return runs["commit"] + changed.where(runs["dirty"].astype(bool), "")


def provenance(runs: pd.DataFrame) -> str:
    """Bullets: commits (changed files named), versions, machines, devices, start times."""
    runs = runs.assign(
        commit_state=_commit_state(runs),
        machine=runs["hostname"]
        + ": "
        + runs["cpu"]
        + ", "
        + runs["threads"].astype(str)
        + " threads",
    )
    started = sorted(s for s in runs["started"] if s)
    lines = [
        f"- git commits: {_counts(runs, 'commit_state')}",
        f"- package versions: {_counts(runs, 'versions')}",
        f"- machines: {_counts(runs, 'machine')}",
        f"- devices: {_counts(runs, 'device')}",
        f"- started: {started[0]} … {started[-1]}" if started else "- started: unknown",
    ]
    missing = runs.loc[~runs["has_run_json"], "run"].tolist()
    if missing:
        lines.append(f"- no run.json (provenance unknown): {', '.join(missing)}")
    resumed = runs.loc[runs.get("resumed", pd.Series(0, index=runs.index)).fillna(0) > 0, "run"]
    if len(resumed):
        lines.append(
            f"- resumed by a later session (run.json: provenance.resumed): {', '.join(resumed)}"
        )
    lines.append(f"- {reproducibility(runs)}")
    return "\n".join(lines) + "\n"


def reproducibility(runs: pd.DataFrame) -> str:
    """What carries: one host kind and software stack (CPU model, SIMD kernels, package
    versions) gives bitwise-equal reruns; another gives numbers within seed noise."""
    stacks = {stack_text(r) for r in runs.to_dict("records")}
    later = runs.get("resumed_stacks", pd.Series("", index=runs.index)).fillna("").astype(str)
    n = len(stacks | {s for text in later for s in text.split("\n") if s})
    if n <= 1:
        return (
            "reproducibility: every run comes from one kind of host and one software stack; "
            "a rerun there gives the same bytes, elsewhere numbers within seed noise (README)"
        )
    return (
        f"reproducibility: these runs come from {n} host kinds or software stacks (CPU "
        "model, SIMD kernels, package versions): runs of different ones differ by "
        "rounding, amplified by training, so compare them within seed noise, not bitwise "
        "(README)"
    )


def _plot_md(plot: Plot, out_dir: Path) -> str:
    note = f"{plot.note} " if plot.note else ""
    return f"![{plot.title}]({rel(plot.png, out_dir)})\n\n{note}[SVG]({rel(plot.svg, out_dir)})\n"


def _best_notes(sec: Section) -> list[tuple[str, list[str]]]:
    """The bullet lists after the best-epoch table: (intro, items), empty ones left out."""
    notes = [
        (
            "Change in best-epoch top-1 against direct quantization at the same bit-width "
            "(the paper claims every method improves on direct, §6):",
            sec.vs_direct,
        ),
        (CLAIMS_INTRO, sec.claims),
    ]
    return [(intro, items) for intro, items in notes if items]


RESULTS_INTRO = (
    "### Results with cost and convergence\n\n"
    "The paper's protocol: every method's final-precision network trains with direct's "
    "recipe; TS stage 1, PQ's earlier rounds and the KD teacher are extra cost. Cost counts "
    "network-epochs after FP pretraining (every round, every network: a student trained E "
    "epochs beside its teacher costs 2E; *of which extra*: beyond the final network's own "
    "epochs) and training seconds on the run's device, wall-clock and CPU (all threads). "
    "A seed is *converged* when its top-1 gained at most the limit over the last quarter "
    "of its final round (*late gain*, points), or when that gain is within evaluation "
    "noise: McNemar's exact one-sided test on the validation images the final evaluation "
    "answers differently from the quarter-point one (p ≥ 0.05; runs that did not count "
    "them are judged by the limit alone). A claim resting on a seed that did not converge "
    "is flagged. Mean ± sd over seeds."
)
EQUAL_COST_INTRO = (
    "### Equal-cost view (not the paper's comparison)\n\n"
    "Each method beside the cheapest direct run of the same bit-width that spent at least "
    "as many network-epochs (`<`: no direct run spent as much; the costliest is shown). "
    "Best-epoch top-1, means over seeds."
)


def _frame_block(intro: str, item: tuple[pd.DataFrame, Path] | None, out_dir: Path) -> str:
    if item is None or item[0].empty:
        return ""
    frame, csv = item
    return f"{intro}\n\n{to_markdown(frame)}\nFile: [CSV]({rel(csv, out_dir)})\n"


def section(sec: Section, out_dir: Path) -> str:
    """## model on dataset: best table, vs direct, final table, figures."""
    parts = [f"## {sec.model} on {sec.dataset}\n"]
    for table, md, csv in sec.tables:
        head = "Best-epoch accuracy" if table.kind == "best" else "Final-epoch accuracy"
        parts.append(f"### {head}\n\n*{table.caption}*\n\n{table.markdown()}")
        parts.append(f"Files: [Markdown]({rel(md, out_dir)}), [CSV]({rel(csv, out_dir)})\n")
        if table.kind == "best":
            for intro, items in _best_notes(sec):
                lines = "\n".join(f"- {x}" for x in items)
                parts.append(f"{intro}\n\n{lines}\n")
            for intro, item in ((RESULTS_INTRO, sec.results), (EQUAL_COST_INTRO, sec.equal_cost)):
                block = _frame_block(intro, item, out_dir)
                if block:
                    parts.append(block)
    for plot in sec.plots:
        parts.append(f"### {plot.title}\n\n{_plot_md(plot, out_dir)}")
    return "\n".join(parts)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return MISSING
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def runs_table(runs: pd.DataFrame, out_dir: Path) -> str:
    """One line per run directory with links to its files (the exact config and logs)."""
    rows = []
    for _, r in runs.iterrows():
        d = Path(r["run_path"])
        files = [
            f"[{n}]({rel(d / n, out_dir)})"
            for n in ("metrics.json", "run.json", "history.csv")
            if (d / n).is_file()
        ]
        rows.append(
            {
                "run": r["run"],
                "stage": r["stage"],
                "method": r["method"],
                "net": r["net"],
                "W/A bits": f"{r['w_bits']}/{r['a_bits']}",
                "seed": r["seed"],
                "best top-1": _fmt(r["best_top1"]),
                "final top-1": _fmt(r["top1"]),
                "epochs": _fmt(r["epochs"], 0),
                "budget": _fmt(r["budget_epochs"], 0),
                "converged": {True: "yes", False: "no"}.get(r.get("converged"), "?"),
                "wall (s)": _fmt(r["wall_s"]),
                "images/s": _fmt(r["images_per_s"], 0),
                "device": r["device"],
                "commit": r["commit"],
                "files": " ".join(files),
            }
        )
    return to_markdown(pd.DataFrame(rows))


def _flatten(d: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, default=str) for k, v in flat_config(d).items()}


def configs(runs: pd.DataFrame) -> str:
    """Per stage, the resolved config: constant keys once, varying keys with all values."""
    parts = []
    for stage, grp in runs.groupby("stage", sort=True):
        flat = [_flatten(c) for c in grp["config"]]
        keys = sorted({k for f in flat for k in f})
        if not keys:
            continue
        rows = []
        for k in keys:
            vals = sorted({f.get(k, "(absent)") for f in flat})
            rows.append({"key": k, "value": " | ".join(vals)})  # to_markdown escapes the bars
        table = to_markdown(pd.DataFrame(rows))
        parts.append(
            f"<details><summary>{stage} ({_n_runs(len(grp))})</summary>\n\n{table}\n</details>\n"
        )
    return "\n".join(parts) if parts else "No run.json with a config was found.\n"


def references(ref: pd.DataFrame) -> str:
    """All reference rows, numeric or not: these are published, not measured by lowbit."""
    if ref.empty:
        return "No reference files.\n"
    frame = ref[[*REFERENCE_COLUMNS, "file"]].copy()
    for c in ("w_bits", "a_bits"):
        frame[c] = frame[c].map(lambda v: MISSING if pd.isna(v) else str(int(v)))
    for c in ("top1", "top5"):
        frame[c] = frame[c].map(lambda v: MISSING if pd.isna(v) else f"{v:.1f}")
    return f"All numbers below are **{PUBLISHED}** by lowbit.\n\n{to_markdown(frame)}"


@dataclass
class Parts:
    """Everything the README shows, already written to disk."""

    title: str
    runs_dir: list[Path]
    runs: pd.DataFrame
    sections: list[Section]
    curves: list[Plot]
    ref: pd.DataFrame
    files: dict[str, Path]  # description → path of the data files (results.csv, ...)
    notes: Path | None = None  # Markdown ending the Accounting section


def render(parts: Parts, out_dir: Path) -> str:
    """The whole README.md text."""
    doc = [
        f"# {parts.title}\n",
        f"Generated by `lowbit.report.build_report` from {_n_runs(len(parts.runs))} under "
        + ", ".join(f"`{rel(d, out_dir).strip('<>')}`" for d in parts.runs_dir)
        + " (relative to this file). Accuracy is top-1 / top-5 in percent, on the images "
        "and at the epoch each table's caption names; Δ is in points.\n",
        "## Provenance\n",
        provenance(parts.runs),
        *(section(sec, out_dir) for sec in parts.sections),
        accounting.render(parts.runs, parts.notes),
        "## Training curves\n",
        *(f"### {p.title}\n\n{_plot_md(p, out_dir)}" for p in parts.curves),
        "" if parts.curves else "No history.csv was found.\n",
        "## Runs\n",
        runs_table(parts.runs, out_dir),
        "## Configs\n",
        configs(parts.runs),
        f"## Published reference numbers ({PUBLISHED})\n",
        references(parts.ref),
        "## Decisions\n",
        decisions(),
        "## Data files\n",
        "\n".join(f"- [{p.name}]({rel(p, out_dir)}): {d}" for d, p in parts.files.items()) + "\n",
    ]
    return "\n".join(x for x in doc if x)
