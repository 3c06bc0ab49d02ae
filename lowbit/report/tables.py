"""Paper-style tables: one per (model, dataset); rows = methods, columns = bit-widths.

Cell: "top-1 / top-5 (Δ)", Δ = change in top-1 against our full-precision network ("fp",
32/32) of the same model and dataset, in points; "mean ± std" (sample std, n−1) and ", n=k"
when several seeds ran; "—" where nothing ran. The paper reports best-epoch validation
accuracy (paper.md §5); the final-epoch table is written beside it for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lowbit.report.collect import bits_label
from lowbit.report.reference import PUBLISHED, matching

BASE_METHODS = ("fp", "direct", "ts", "pq", "sp", "kd")  # the paper's order of methods
MISSING = "—"
MINUS = "−"  # U+2212, as printed tables use
PAIRS = {"best": ("best_top1", "best_top5"), "final": ("top1", "top5")}
# `method` is the row's name: lowbit.report.collect appends the run identity's settings
# that differ from the defaults ("direct [lsq]"), so runs of different settings never
# share a row; base_method and setting hold the two parts.
# `evaluated`: "test" (held-out test images, at the epoch the validation images chose)
# or "val" (the validation images themselves): the two are never pooled either.
GROUP_KEYS = ["model", "dataset", "role", "method", "base_method", "setting", "w_bits", "a_bits",
              "bits", "evaluated"]  # fmt: skip


def method_key(method: str, role: str = "main") -> tuple:
    """Row order: fp, direct, ts, pq, sp, kd; combinations ("ts+pq+kd") by size, then by
    their parts' order; unknown methods alphabetically; extra nets (teachers) last."""
    parts = method.split("+")
    if all(p in BASE_METHODS for p in parts):
        idx = sorted(BASE_METHODS.index(p) for p in parts)
        return (role == "extra", 0 if len(parts) == 1 else 1, len(parts), idx, method)
    return (role == "extra", 2, 0, [], method)


def bits_key(bits: tuple[int, int]) -> tuple:
    """Columns by weight then activation bits, FP (32/32) last."""
    w, a = bits
    return ((w, a) == (32, 32), w, a)


def aggregate(nets: pd.DataFrame, kind: str = "best") -> pd.DataFrame:
    """Mean, sample std and count of top-1/top-5 per (model, dataset, method, bits)."""
    c1, c5 = PAIRS[kind]
    if "setting" not in nets:  # frames built by hand: the default setting
        nets = nets.assign(setting="", base_method=nets["method"])
    if "evaluated" not in nets:
        nets = nets.assign(evaluated="val")
    g = nets.groupby(GROUP_KEYS, sort=False, dropna=False)
    out = g.agg(
        top1=(c1, "mean"),
        top1_std=(c1, "std"),
        top5=(c5, "mean"),
        top5_std=(c5, "std"),
        n=(c1, "count"),
    )
    return out.reset_index()


def fp_baseline(agg: pd.DataFrame, model: str, dataset: str) -> float | None:
    """Mean top-1 of our plain full-precision network ("fp" at 32/32), if it ran."""
    sel = agg[
        (agg["model"] == model)
        & (agg["dataset"] == dataset)
        & (agg["role"] == "main")
        & (agg["method"] == "fp")
        & (agg["bits"] == "FP")
    ]
    return None if sel.empty or pd.isna(sel["top1"].iloc[0]) else float(sel["top1"].iloc[0])


def signed(x: float, decimals: int = 1) -> str:
    """+0.4 / −1.3 / ±0.0 (a rounded zero has no sign)."""
    text = f"{x:+.{decimals}f}"
    if float(text) == 0.0:
        return "±" + text[1:]
    return text.replace("-", MINUS)


def _mean_std(mean: float, std: float, n: int, decimals: int) -> str:
    if pd.isna(mean):
        return MISSING
    text = f"{mean:.{decimals}f}"
    if n > 1 and not pd.isna(std):
        text += f" ± {std:.{decimals}f}"
    return text


def format_cell(r: pd.Series, fp: float | None, decimals: int, delta: bool) -> str:
    """ "91.2 / 99.1 (−1.3)"; with seeds "91.0 ± 1.0 / 99.0 ± 0.5 (−1.3), n=3"."""
    n = int(r["n"])
    text = f"{_mean_std(r['top1'], r['top1_std'], n, decimals)} / "
    text += _mean_std(r["top5"], r["top5_std"], n, decimals)
    if delta and fp is not None and not pd.isna(r["top1"]):
        text += f" ({signed(r['top1'] - fp, decimals)})"
    return text + (f", n={n}" if n > 1 else "")


@dataclass
class Table:
    """One paper table: `frame` has columns method, numbers, then one per bit-width."""

    model: str
    dataset: str
    kind: str  # "best" | "final"
    frame: pd.DataFrame
    caption: str

    @property
    def slug(self) -> str:
        return "_".join(slugify(x) for x in (self.model, self.dataset, self.kind))

    def markdown(self) -> str:
        return to_markdown(self.frame)


def slugify(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(text).lower())


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub pipe table (no tabulate dependency); '|' inside cells is escaped."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _columns(ours: pd.DataFrame, refs: pd.DataFrame) -> list[str]:
    pairs = {(int(w), int(a)) for w, a in zip(ours["w_bits"], ours["a_bits"], strict=True)}
    pairs |= {(int(w), int(a)) for w, a in zip(refs["w_bits"], refs["a_bits"], strict=True)}
    return [bits_label(w, a) for w, a in sorted(pairs, key=bits_key)]


def _our_rows(sub: pd.DataFrame, cols: list[str], fp: float | None, decimals: int) -> list[dict]:
    rows = []
    groups = sorted(sub.groupby(["role", "method"]), key=lambda kv: method_key(kv[0][1], kv[0][0]))
    for (role, method), grp in groups:
        row = {"method": method, "numbers": "measured", **dict.fromkeys(cols, MISSING)}
        for _, r in grp.iterrows():
            is_fp = role == "main" and method == "fp" and r["bits"] == "FP"
            row[r["bits"]] = format_cell(r, fp, decimals, delta=not is_fp)
        rows.append(row)
    return rows


def _ref_rows(refs: pd.DataFrame, cols: list[str], decimals: int) -> list[dict]:
    rows = []
    for (source, _method), grp in refs.groupby(["source", "method"], sort=False):
        row = {"method": source, "numbers": PUBLISHED, **dict.fromkeys(cols, MISSING)}
        for _, r in grp.iterrows():
            top5 = MISSING if pd.isna(r["top5"]) else f"{r['top5']:.{decimals}f}"
            row[bits_label(int(r["w_bits"]), int(r["a_bits"]))] = (
                f"{r['top1']:.{decimals}f} / {top5}"
            )
        rows.append(row)
    return rows


EVALUATED = {
    ("best", "test"): "Top-1 / top-5 accuracy (%) on the test images at the epoch the held-out "
    "validation images chose (the paper reports the best epoch, §5; choosing it on the images "
    "that are reported would flatter every row)",
    ("final", "test"): "Top-1 / top-5 accuracy (%) on the test images after the last epoch",
    ("best", "val"): "Best-epoch validation top-1 / top-5 accuracy (%), the values the paper "
    "reports (§5); no images were held out, so the epoch is chosen on the reported images",
    ("final", "val"): "Final-epoch validation top-1 / top-5 accuracy (%), for comparison (the "
    "paper reports best-epoch values)",
}


def caption(model: str, dataset: str, kind: str, fp: float | None, refs: pd.DataFrame,
            evaluated: str = "val") -> str:  # fmt: skip
    which = "; ".join(EVALUATED[(kind, e)] for e in evaluated.split(","))
    text = f"{model} on {dataset}. {which}. "
    if fp is None:
        text += "No full-precision (fp) run: no change against FP shown. "
    else:
        text += f"In parentheses: change in top-1 against our fp network ({fp:.1f}), in points. "
    text += "Mean ± sample standard deviation (n−1) over seeds where n > 1. —: not run."
    if not refs.empty:
        sources = ", ".join(sorted(set(refs["source"])))
        text += (
            f" Rows marked '{PUBLISHED}' ({sources}) are copied from the papers, with their own "
            "training recipes; full citations in the reference CSV files and the report."
        )
    return text


def paper_table(
    agg: pd.DataFrame, ref: pd.DataFrame, model: str, dataset: str, kind: str, decimals: int = 1
) -> Table:
    """The table for one (model, dataset) from `aggregate(nets, kind)`."""
    sub = agg[(agg["model"] == model) & (agg["dataset"] == dataset)]
    # Published rows go beside the paper-style (best-epoch) table only.
    refs = matching(ref, model, dataset) if kind == "best" else ref.head(0)
    fp = fp_baseline(agg, model, dataset)
    cols = _columns(sub, refs)
    rows = _our_rows(sub, cols, fp, decimals) + _ref_rows(refs, cols, decimals)
    frame = pd.DataFrame(rows, columns=["method", "numbers", *cols])
    evaluated = ",".join(sorted(set(sub["evaluated"]), reverse=True))
    text = caption(model, dataset, kind, fp, refs, evaluated) + _single_runs(sub)
    return Table(model, dataset, kind, frame, text)


def _single_runs(sub: pd.DataFrame) -> str:
    """Beside cells with several seeds, name the cells that are one run, so a reader does
    not take a missing n for a missing sd (e.g. one FP network shared by every seed)."""
    if sub.empty or not (sub["n"] > 1).any():
        return ""
    one = sub[sub["n"] == 1]
    keys = zip(one["role"], one["method"], one["bits"], strict=True)
    ordered = sorted(set(keys), key=lambda k: (method_key(k[1], k[0]), k[2]))
    cells = list(dict.fromkeys(f"{m} {b}" for _, m, b in ordered))  # in the table's order
    return f" One run each, so no ± and no n: {', '.join(cells)}." if cells else ""


def vs_direct(agg: pd.DataFrame, model: str, dataset: str, decimals: int = 1) -> list[str]:
    """One line per bit-width: each method's change in top-1 against direct quantization
    (the paper's claim: every method improves over direct, §6)."""
    sub = agg[(agg["model"] == model) & (agg["dataset"] == dataset) & (agg["role"] == "main")]
    lines = []
    for (bits, setting), grp in sub.groupby(["bits", "setting"], sort=False):
        direct = grp[grp["base_method"] == "direct"]["top1"]
        others = grp[~grp["base_method"].isin(["direct", "fp"])]
        if direct.empty or others.empty:
            continue
        order = sorted(others["method"], key=method_key)
        by = others.set_index("method")["top1"]
        parts = [f"{m} {signed(by[m] - direct.iloc[0], decimals)}" for m in order]
        lines.append(f"{bits}{f' [{setting}]' if setting else ''}: " + ", ".join(parts))
    return sorted(lines)


def summary_metrics(agg: pd.DataFrame) -> dict[str, Any]:
    """Best-epoch top-1 (mean over seeds) of the final main networks, for `dvc metrics
    show` / `dvc exp show`: {"fp": 98.2, "w2a2": {"direct": 78.6, …}, …}. DVC names the
    columns "fp" and "w2a2.direct": short enough for a terminal (`dvc exp show --keep
    'w2a2.*'`). Mixed bit-widths (W2A32 after TS stage 1) are steps on the way, left to
    the tables. One model and dataset per pipeline: a second one is keyed
    "<model>/<dataset>/<bits>"."""
    out: dict[str, Any] = {}
    main = agg[(agg["role"] == "main") & (agg["w_bits"] == agg["a_bits"]) & agg["top1"].notna()]
    pairs = main[["model", "dataset"]].drop_duplicates().itertuples(index=False)
    first = next(pairs, None)
    for _, r in main.iterrows():
        prefix = (
            "" if (r["model"], r["dataset"]) == tuple(first) else f"{r['model']}/{r['dataset']}/"
        )
        top1 = round(float(r["top1"]), 2)
        if r["bits"].lower() == "fp":  # one FP network per start: "fp", "fp [clip start]"
            out[f"{prefix}{r['method']}"] = top1
        else:
            out.setdefault(f"{prefix}{r['bits'].lower()}", {})[r["method"]] = top1
    return {
        k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in sorted(out.items())
    }
