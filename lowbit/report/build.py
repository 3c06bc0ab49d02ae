"""build_report's body: collect → tables → plots → data files → README.md → metrics.json.

Everything is written atomically. Files under out_dir/tables and out_dir/plots that this run
did not write are removed afterwards, so a figure of a run that no longer exists never lingers
(those two folders belong to the report; nothing else under out_dir is touched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lowbit.errors import LowbitError
from lowbit.identity import bits_label
from lowbit.report import index, plots
from lowbit.report.claims import verdict_lines
from lowbit.report.collect import Collection, collect, read_history
from lowbit.report.cost import equal_cost_table, results_table
from lowbit.report.recipes import check_pooled
from lowbit.report.reference import load_reference
from lowbit.report.tables import (
    GROUP_KEYS,
    aggregate,
    paper_table,
    slugify,
    summary_metrics,
    vs_direct,
)


def _write(path: Path, text: str) -> Path:
    from lowbit.checkpoint import atomic_write_text  # lazy: lowbit.checkpoint imports torch

    atomic_write_text(path, text)
    return path


def _sections(
    col: Collection, agg: dict[str, pd.DataFrame], ref: pd.DataFrame, out_dir: Path
) -> list[index.Section]:
    """Per (model, dataset): best and final tables (Markdown + CSV) and the two figures."""
    sections = []
    claims = verdict_lines(col.nets)  # Holm over the whole report: before any section
    pairs = col.nets[["model", "dataset"]].drop_duplicates().sort_values(["model", "dataset"])
    for model, dataset in pairs.itertuples(index=False):
        tables = []
        for kind in ("best", "final"):
            t = paper_table(agg[kind], ref, model, dataset, kind)
            md = _write(out_dir / "tables" / f"{t.slug}.md", f"*{t.caption}*\n\n{t.markdown()}")
            csv = _write(out_dir / "tables" / f"{t.slug}.csv", t.frame.to_csv(index=False))
            tables.append((t, md, csv))
        figs = [
            plots.top1_vs_bits(col.nets, agg["best"], ref, model, dataset, out_dir / "plots"),
            plots.cost_vs_accuracy(col.nets, model, dataset, out_dir / "plots"),
        ]
        lines = vs_direct(agg["best"], model, dataset)
        extra = {}
        for name, frame in (
            ("results", results_table(col.nets, model, dataset)),
            ("equal_cost", equal_cost_table(col.nets, model, dataset)),
        ):
            slug = f"{slugify(model)}_{slugify(dataset)}_{name}"
            csv = _write(out_dir / "tables" / f"{slug}.csv", frame.to_csv(index=False))
            extra[name] = (frame, csv)
        sections.append(
            index.Section(
                model, dataset, tables, lines, [f for f in figs if f],
                claims=claims.get((model, dataset), []),
                results=extra["results"], equal_cost=extra["equal_cost"],
            )
        )  # fmt: skip
    return sections


def _histories(runs: pd.DataFrame) -> pd.DataFrame:
    """All history.csv files as one long frame, `run` = a short label unique per figure."""
    frames = []
    for _, r in runs.iterrows():
        h = read_history(Path(r["run_path"]))
        if h is None:
            continue
        label = f"{r['method']} {bits_label(r['w_bits'], r['a_bits'])} seed {r['seed']}"
        frames.append(
            h.assign(
                label=label, run=r["run"], model=r["model"], dataset=r["dataset"], stage=r["stage"]
            )
        )
    if not frames:
        return pd.DataFrame()
    hist = pd.concat(frames, ignore_index=True)
    keys = ["model", "dataset", "stage", "label"]
    # Two runs with the same label in one figure (e.g. a rerun in another folder): use the id.
    clash = hist.groupby(keys)["run"].transform("nunique") > 1
    hist["label"] = hist["label"].where(~clash, hist["run"])
    return hist


def _curves(runs: pd.DataFrame, out_dir: Path) -> list[plots.Plot]:
    hist = _histories(runs)
    if hist.empty:
        return []
    out = []
    for (model, dataset, stage), grp in hist.groupby(["model", "dataset", "stage"], sort=True):
        name = f"curves_{slugify(model)}_{slugify(dataset)}_{slugify(stage)}"
        title = f"{model} on {dataset}, stage {stage}: training curves"
        data = grp.drop(columns="run").rename(columns={"label": "run"})
        fig = plots.training_curves(data, title, out_dir / "plots", name)
        out.extend([fig] if fig else [])
    return out


def _prune(folder: Path, keep: set[Path]) -> None:
    """Remove report files in `folder` that this build did not write (see module docstring)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_file() and p.suffix in {".md", ".csv", ".png", ".svg"} and p.resolve() not in keep:
            p.unlink()


def _data_files(col: Collection, agg_best: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    cols = [
        "model",
        "dataset",
        "bits",
        "w_bits",
        "a_bits",
        "method",
        "role",
        "top1",
        "top1_std",
        "top5",
        "n",
    ]
    runs = col.runs.drop(columns=["config", "data", "run_path"])
    return {
        "one row per (run, metric), long format": _write(
            out_dir / "results.csv", col.long().to_csv(index=False)
        ),
        "one row per run directory: provenance": _write(
            out_dir / "runs.csv", runs.to_csv(index=False)
        ),
        "best-epoch top-1 per method and bit-width, mean over seeds (for `dvc plots`)": _write(
            out_dir / "plots.csv", agg_best[cols].to_csv(index=False)
        ),
    }


def build(
    runs_dir: list[Path],
    out_dir: Path,
    reference_dir: Path | None,
    title: str,
    dataset: str | None = None,
    notes: Path | None = None,
) -> dict[str, Any]:
    """See lowbit.report.build_report."""
    if notes is not None and not Path(notes).is_file():  # before anything is written
        raise LowbitError(
            f"notes file not found: {notes} (report.notes: name a Markdown file or drop it)"
        )
    col = collect(runs_dir, skip=out_dir / "metrics.json", relative_to=out_dir)
    if dataset:
        col.nets["dataset"] = dataset
        col.runs["dataset"] = dataset
    check_pooled(col.runs, [k for k in GROUP_KEYS if k in col.runs])  # before anything is written
    ref = load_reference(reference_dir)
    agg = {kind: aggregate(col.nets, kind) for kind in ("best", "final")}
    sections = _sections(col, agg, ref, out_dir)
    curves = _curves(col.runs, out_dir)
    files = _data_files(col, agg["best"], out_dir)
    summary = summary_metrics(agg["best"])
    files["flat summary for `dvc metrics show`"] = out_dir / "metrics.json"
    parts = index.Parts(title, runs_dir, col.runs, sections, curves, ref, files, notes)
    readme = index.render(parts, out_dir)
    written = {p.resolve() for s in sections for t in s.tables for p in t[1:]}
    written |= {s.results[1].resolve() for s in sections} | {
        s.equal_cost[1].resolve() for s in sections
    }
    written |= {
        p.resolve()
        for f in [*curves, *(f for s in sections for f in s.plots)]
        for p in (f.png, f.svg)
    }
    _prune(out_dir / "tables", written)
    _prune(out_dir / "plots", written)
    from lowbit.checkpoint import atomic_write_json

    atomic_write_json(out_dir / "metrics.json", summary)
    _write(out_dir / "README.md", readme)
    return {**summary, "runs": len(col.runs)}
