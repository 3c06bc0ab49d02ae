"""Seaborn figures, each written as PNG (150 dpi) and SVG.

seaborn and matplotlib are imported inside the functions so `import lowbit.report` stays
light. Figures are plain `matplotlib.figure.Figure` objects on an Agg canvas: no pyplot
state, no global backend switch, safe in a notebook or a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lowbit.report.reference import PUBLISHED, matching
from lowbit.report.tables import bits_key, fp_baseline, method_key, slugify

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BITS_NOTE = (
    "Mean ± sd over seeds of the best-epoch top-1. Only equal weight and activation bit-widths "
    "are on the axis; mixed ones (e.g. W2A32 after TS stage 1) are in the tables. Gray markers "
    f"are {PUBLISHED}."
)
CURVES_NOTE = (
    "Solid: the run's main network; dashed: other networks trained in the same run (e.g. the "
    "KD teacher). Multi-round stages (TS, PQ) count epochs over all rounds; a dotted vertical "
    "line in a run's colour marks where its bit-width changes (a new round)."
)
COST_NOTE = (
    "One point per run (main network). Wall time and images/s are as measured on each run's "
    "device (see Runs); the budget counts network-epochs (every TS/PQ round, both KD networks)."
)
MARKERS = ("X", "P", "*", "D", "v", "^")  # one per published source, distinct from seaborn's


@dataclass
class Plot:
    """A written figure: `kind` is "bits", "curves" or "cost"; paths are PNG and SVG."""

    kind: str
    title: str
    png: Path
    svg: Path
    note: str = ""


@contextmanager
def _style() -> Iterator[None]:
    import seaborn as sns

    # Axes style applies when axes are created, so the figure is made inside this context.
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def _figure(ncols: int, width: float = 5.5, height: float = 4.2) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, attached to this figure only
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def save(fig: Figure, out_dir: Path, name: str, kind: str, title: str, note: str = "") -> Plot:
    """Write `name`.png and `name`.svg atomically; no dates in the metadata and a fixed SVG
    hash salt, so rerunning the report on the same runs gives identical files (DVC-friendly)."""
    from matplotlib import rc_context

    from lowbit.checkpoint import atomic_write_bytes  # lazy: lowbit.checkpoint imports torch

    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        buf = io.BytesIO()
        with rc_context({"svg.hashsalt": "lowbit"}):
            # No bbox_inches="tight": constrained layout already makes room for outside legends.
            fig.savefig(buf, format=ext, dpi=150, metadata=meta)
        paths.append(Path(out_dir) / f"{name}.{ext}")
        atomic_write_bytes(paths[-1], buf.getvalue())
    return Plot(kind, title, paths[0], paths[1], note)


def _legend_outside(ax: Axes, title: str | None = None) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title=title, fontsize="small")


def _published(ax: Axes, refs: pd.DataFrame, order: list[str]) -> None:
    """Published peers as gray markers at their bit-width column (`refs` has a bits column)."""
    for i, (source, grp) in enumerate(refs.groupby("source", sort=True)):
        xs = [order.index(b) for b in grp["bits"]]  # pointplot puts category k at x = k
        ax.scatter(
            xs,
            grp["top1"],
            marker=MARKERS[i % len(MARKERS)],
            s=60,
            color="0.35",
            zorder=5,
            label=f"{source} ({PUBLISHED})",
        )


def _bits_data(
    nets: pd.DataFrame, ref: pd.DataFrame, model: str, dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(our runs, matching published rows, x-axis order) for top1_vs_bits.

    Only W = A bit-widths below 32 are on the axis: a mixed column (W2A32, TS stage 1) between
    W2A2 and W4A4 would draw lines through points that are not one progression.
    """
    same = (nets["w_bits"] == nets["a_bits"]) & (nets["bits"] != "FP")
    sub = nets[(nets["model"] == model) & (nets["dataset"] == dataset) & same]
    refs = matching(ref, model, dataset)
    refs = refs[(refs["w_bits"] == refs["a_bits"]) & (refs["w_bits"] < 32)]
    refs = refs.assign(
        bits=[_label(w, a) for w, a in zip(refs["w_bits"], refs["a_bits"], strict=True)]
    )
    pairs = set(zip(sub["w_bits"], sub["a_bits"], strict=True))
    pairs |= set(zip(refs["w_bits"], refs["a_bits"], strict=True))
    return sub, refs, [_label(w, a) for w, a in sorted(pairs, key=bits_key)]


def _methods(ax: Axes, sub: pd.DataFrame, order: list[str]) -> None:
    """One pointplot line per method, in the paper's row order; mean ± sd over seeds."""
    import seaborn as sns

    if sub.empty:
        return
    keys = sub[["method", "role"]].drop_duplicates().itertuples(index=False)
    hue_order = [m for m, r in sorted(keys, key=lambda k: method_key(k[0], k[1]))]
    dodge = 0.25 if len(hue_order) > 1 else False
    sns.pointplot(
        data=sub,
        x="bits",
        y="best_top1",
        hue="method",
        order=order,
        ax=ax,
        hue_order=hue_order,
        errorbar="sd",
        capsize=0.08,
        palette="colorblind",
        dodge=dodge,
    )


def top1_vs_bits(
    nets: pd.DataFrame,
    agg: pd.DataFrame,
    ref: pd.DataFrame,
    model: str,
    dataset: str,
    out_dir: Path,
) -> Plot | None:
    """Best-epoch top-1 (%) per bit-width, one line per method (mean ± sd over seeds), our fp
    network as a dashed horizontal line, matching published peers as gray markers."""
    sub, refs, order = _bits_data(nets, ref, model, dataset)
    if not order:
        return None
    fp = fp_baseline(agg, model, dataset)
    title = f"{model} on {dataset}: top-1 vs bit-width"
    with _style():
        fig, (ax,) = _figure(1, width=8.0)
        _methods(ax, sub, order)
        if fp is not None:
            label = f"fp 32/32 ({fp:.1f})"
            ax.axhline(fp, color="black", linestyle="--", linewidth=1.2, label=label)
        _published(ax, refs, order)
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.5, len(order) - 0.5)  # categories evenly spaced, also with one method
        ax.set(
            xlabel="bit-width (W: weight bits, A: activation bits)",
            ylabel="best-epoch top-1 accuracy (%)",
            title=title,
        )
        _legend_outside(ax, "method")
        name = f"top1_vs_bits_{slugify(model)}_{slugify(dataset)}"
        return save(fig, out_dir, name, "bits", title, BITS_NOTE)


def _label(w: Any, a: Any) -> str:
    from lowbit.identity import bits_label

    return bits_label(int(w), int(a))


def _round_starts(run: pd.DataFrame) -> list[tuple[float, str]]:
    """(step, bits label) where a run's round changes, from its main network rows; the
    label ("W4A4") is the new round's bit-width, "" when the history does not record it."""
    main = run[run["net"] == "main"].sort_values("step")
    if "round" not in main or main["round"].nunique() < 2:
        return []
    change = main["round"].ne(main["round"].shift()) & main["round"].shift().notna()
    bits = [(r.get("w_bits"), r.get("a_bits")) for _, r in main[change].iterrows()]
    labels = ["" if pd.isna(w) or pd.isna(a) else _label(w, a) for w, a in bits]
    return [(float(s) - 0.5, t) for s, t in zip(main.loc[change, "step"], labels, strict=True)]


def _mark_rounds(ax: Axes, hist: pd.DataFrame, colors: dict, labels: bool) -> None:
    """A dotted line at every round start of every run; with `labels`, each distinct
    (step, bits) once, written along the top of the panel."""
    seen = set()
    for run, grp in hist.groupby("run", sort=False):
        for x, label in _round_starts(grp):
            ax.axvline(x, color=colors[run], linestyle=":", linewidth=1.0, alpha=0.8)
            if labels and label and (x, label) not in seen:
                seen.add((x, label))
                ax.text(x, 0.98, f" {label}", transform=ax.get_xaxis_transform(),
                        rotation=90, va="top", ha="left", fontsize=7, color="0.3")  # fmt: skip


def training_curves(hist: pd.DataFrame, title: str, out_dir: Path, name: str) -> Plot | None:
    """Validation top-1 (%) and training loss against epoch, one line per run and network
    (`hist`: columns run, net, step, round, w_bits, a_bits, val_top1, train_loss; see
    collect.read_history), round boundaries marked and labelled with the new bit-width."""
    import seaborn as sns

    if hist.empty:
        return None
    panels = (("val_top1", "validation top-1 accuracy (%)"), ("train_loss", "training loss"))
    runs = list(dict.fromkeys(hist["run"]))
    colors = dict(zip(runs, sns.color_palette("colorblind", len(runs)), strict=True))
    with _style():
        fig, axes = _figure(2)
        for i, (ax, (col, ylabel)) in enumerate(zip(axes, panels, strict=True)):
            data = hist.dropna(subset=[col])
            if not data.empty:
                sns.lineplot(
                    data=data,
                    x="step",
                    y=col,
                    hue="run",
                    hue_order=runs,
                    style="net" if hist["net"].nunique() > 1 else None,
                    estimator=None,
                    errorbar=None,
                    palette=colors,
                    legend=i == 1,
                    ax=ax,
                )
            _mark_rounds(ax, hist, colors, labels=i == 0)
            ax.set(xlabel="epoch (over all rounds)", ylabel=ylabel, title=ylabel)
        _legend_outside(axes[1])
        fig.suptitle(title)
        return save(fig, out_dir, name, "curves", title, CURVES_NOTE)


COST_PANELS = (
    ("wall_s", "training wall time (s)"),
    ("images_per_s", "training throughput (images/s)"),
    ("budget_epochs", "training budget (network-epochs)"),
)


def cost_vs_accuracy(nets: pd.DataFrame, model: str, dataset: str, out_dir: Path) -> Plot | None:
    """Best-epoch top-1 (%) against wall time, throughput and budget, one point per run."""
    import seaborn as sns

    sel = (nets["model"] == model) & (nets["dataset"] == dataset) & (nets["role"] == "main")
    sub = nets[sel]
    panels = [(c, x) for c, x in COST_PANELS if sub[c].notna().any()]
    if not panels:
        return None
    hue_order = sorted(sub["method"].unique(), key=method_key)
    style_order = sorted(sub["bits"].unique(), key=lambda b: bits_key(_bits_of(sub, b)))
    title = f"{model} on {dataset}: cost vs accuracy"
    with _style():
        fig, axes = _figure(len(panels), width=4.6)
        for i, (ax, (col, xlabel)) in enumerate(zip(axes, panels, strict=True)):
            sns.scatterplot(
                data=sub.dropna(subset=[col]),
                x=col,
                y="best_top1",
                hue="method",
                style="bits",
                hue_order=hue_order,
                style_order=style_order,
                s=70,
                palette="colorblind",
                legend=i == len(panels) - 1,
                ax=ax,
            )
            ax.set(xlabel=xlabel, ylabel="best-epoch top-1 accuracy (%)")
        _legend_outside(axes[-1])
        fig.suptitle(title)
        name = f"cost_{slugify(model)}_{slugify(dataset)}"
        return save(fig, out_dir, name, "cost", title, COST_NOTE)


def _bits_of(df: pd.DataFrame, label: str) -> tuple[int, int]:
    row = df[df["bits"] == label].iloc[0]
    return int(row["w_bits"]), int(row["a_bits"])
