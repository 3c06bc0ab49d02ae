"""Read every run's metrics.json, run.json and history.csv into tidy DataFrames.

A run directory (written by a stage) holds:
  metrics.json  final and best-epoch accuracy, bit-widths, cost     required; validated here
  run.json      resolved config + provenance (commit, versions, ...)  optional; "unknown" if absent
  history.csv   per-epoch curves, other nets' columns as "<net>/..."  optional; read for the plots

Extra networks of a run (`metrics.json["extra"]`, e.g. the KD teacher) become rows of their
own, method "<method>-<net>" (a teacher: "<method>-teacher@w<w>a<a>", named after the
student bits of its run, e.g. "kd-teacher@w2a2") and role "extra", so tables list them after
the methods proper. Their bit-widths are the entry's own, else 32/32 for a teacher, else the
run's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lowbit.errors import LowbitError
from lowbit.identity import RunId, bits_label
from lowbit.metrics import read_json, read_run_metrics

# Per-network numbers: these become the `metric` column of results.csv.
METRICS = (
    "top1",
    "top5",
    "best_top1",
    "best_top5",
    "loss",
    "best_epoch",
    "epochs",
    "budget_epochs",
    "final_epochs",
    "extra_epochs",
    "cost_s",
    "cost_cpu_s",
    "late_gain",
    "late_p",
    "train_top1",
)
LONG_COLUMNS = [
    "run",
    "run_dir",
    "stage",
    "method",
    "net",
    "role",
    "model",
    "dataset",
    "w_bits",
    "a_bits",
    "bits",
    "seed",
    "metric",
    "value",
    "wall_s",
    "images_per_s",
    "device",
    "commit",
    "hostname",
]


@dataclass
class Collection:
    """What the report is built from.

    nets: one row per (run, network), metric columns wide; runs: one row per run directory
    with its provenance and resolved config.
    """

    runs_dir: Path
    nets: pd.DataFrame
    runs: pd.DataFrame

    def long(self) -> pd.DataFrame:
        """results.csv: one row per (run, metric); `run` is "<dir>" or "<dir>#<net>"."""
        ids = [c for c in LONG_COLUMNS if c not in ("metric", "value")]
        out = self.nets.melt(id_vars=ids, value_vars=list(METRICS), var_name="metric")
        out = out.dropna(subset=["value"])
        return out[LONG_COLUMNS].sort_values(["run", "metric"], kind="stable", ignore_index=True)


def numeric(frame: pd.DataFrame, col: str) -> pd.Series:
    """frame[col] as numbers (unparsable → NaN), all NaN when the column is absent."""
    if col not in frame:
        return pd.Series(float("nan"), index=frame.index)
    return pd.to_numeric(frame[col], errors="coerce")


def find_metrics(sources: Sequence[Path], skip: Path | None = None) -> list[list[Path]]:
    """Every metrics.json under each folder, sorted, except the file `skip` (the report's own
    summary, out_dir/metrics.json, when out_dir lies inside a runs folder). A folder may be
    absent or empty (a fresh clone has committed results but no live runs) as long as one
    of them holds runs."""
    where = ", ".join(str(s) for s in sources)
    if not any(s.is_dir() for s in sources):
        raise LowbitError(f"runs folder not found: {where} (run the pipeline first)")
    own = Path(skip).resolve() if skip is not None else None
    found = []
    for source in sources:
        paths = sorted(source.rglob("metrics.json")) if source.is_dir() else []
        found.append([p for p in paths if own is None or p.resolve() != own])
    if not any(found):
        raise LowbitError(
            f"no runs found under {where}: no metrics.json in it or below it "
            "(run the pipeline, or `lowbit archive --to results` a finished seed)"
        )
    if len(sources) > 1 and not found[0]:
        # a fresh clone, or a mistyped common.runs_dir: say which it is built from
        msg = f"no runs under {sources[0]}: the report shows the committed results only"
        warnings.warn(msg, stacklevel=3)  # the caller of collect
    return found


# With held-out test images (prepare.holdout_per_class) the report quotes them: top-1 on
# the test images at the epoch the validation images chose, and after the last epoch.
# The validation values stay beside them as val_*; `evaluated` says which the row holds.
REPORTED = {"best_top1": "best_test_top1", "best_top5": "best_test_top5",
            "top1": "test_top1", "top5": "test_top5"}  # fmt: skip


def _reported(row: dict[str, Any]) -> dict[str, Any]:
    test = row.get("best_test_top1") is not None
    for shown, held_out in REPORTED.items():
        row[f"val_{shown}"] = row.get(shown)
        if test:
            row[shown] = row.get(held_out)
    row["evaluated"] = "test" if test else "val"
    return row


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """One metrics.json → rows (the main net first, then each extra net), validated
    against lowbit.metrics.RunMetrics (the schema the stages write); accuracies are the
    reported ones (see REPORTED), identity columns from lowbit.identity."""
    run = read_run_metrics(path)
    main = _reported(run.model_dump(exclude={"extra"}))
    rid = RunId.of(main, path.parent.name)
    main.update(run_id=rid, slug=rid.slug(), fp_start=rid.fp_start, setting=rid.setting())
    main["quantizer"], main["block_output"] = rid.quantizer, rid.block_output
    if main["tag"]:  # another run of the same stage, e.g. direct trained longer
        main["method"] = f"{main['method']} ({main['tag']})"
    main["base_method"] = main["method"]
    if main["setting"]:  # other settings than the defaults: a row of their own
        main["method"] = f"{main['method']} [{main['setting']}]"
    main["net"] = main["net"] or "main"
    main["role"] = "main"
    rows = [main]
    for net, entry in sorted(run.extra.items()):
        e = entry.model_dump()
        teacher = "teacher" in net.lower()
        # the entry's own numbers only: a teacher does not inherit the student's cost
        row = _reported({**main, **{k: e.get(k) for k in (*METRICS, *REPORTED.values())}})
        row["net"] = net
        row["weights_digest"] = row["init_weights_digest"] = None  # the student's, not its
        for k in ("late_gain", "late_p", "converged"):
            row[k] = e[k]
        # A teacher is named after its run's student bits: the teachers of the W2A2 and
        # W4A4 runs are different networks, not seeds of one.
        suffix = f"@{rid.bits_token()}" if teacher else ""
        row["method"] = e["method"] or f"{run.method}-{net}{suffix}"
        row["base_method"] = row["method"]
        if main["setting"]:
            row["method"] = f"{row['method']} [{main['setting']}]"
        row["w_bits"] = e["w_bits"] or (32 if teacher else main["w_bits"])
        row["a_bits"] = e["a_bits"] or (32 if teacher else main["a_bits"])
        row["role"] = "extra"
        rows.append(row)
    return rows


def versions_text(prov: dict[str, Any]) -> str:
    """ "dvc 3.67.1, torch 2.14.1, …" from a provenance's versions."""
    versions = prov.get("versions") or "unknown"
    if isinstance(versions, dict):
        versions = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    return str(versions)


def stack_text(prov: dict[str, Any]) -> str:
    """A host kind and software stack: CPU model / SIMD kernels / package versions."""
    cpu, cap = prov.get("cpu") or "unknown", prov.get("cpu_capability") or "unknown"
    return f"{cpu} / {cap} / {versions_text(prov)}"


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """Provenance of one run from its run.json; "unknown" fields when the file is absent."""
    path = run_dir / "run.json"
    raw = read_json(path) if path.is_file() else {}
    prov = raw.get("provenance") or {}
    config = raw.get("config") or {}
    if not isinstance(prov, dict) or not isinstance(config, dict):
        raise LowbitError(f"{path}: 'provenance' and 'config' must be objects")
    threads = prov.get("threads")
    later = [r for r in prov.get("resumed") or [] if isinstance(r, dict)]
    return {
        "commit": str(prov.get("git_commit") or "unknown"),
        "dirty": prov.get("git_dirty") is True,
        # which tracked files differed from the commit (run.json keeps up to 20)
        "dirty_files": ", ".join(str(f) for f in prov.get("git_dirty_files") or []),
        "device": str(prov.get("device") or "unknown"),
        "hostname": str(prov.get("hostname") or "unknown"),
        "cpu": str(prov.get("cpu") or "unknown"),
        "cpu_capability": str(prov.get("cpu_capability") or "unknown"),
        "threads": str(threads) if threads is not None else "?",
        "started": str(prov.get("started") or ""),
        "versions": versions_text(prov),
        # later sessions that trained the run (lowbit.training.origin), and the software
        # stacks they trained on: a resume on another stack changes what a rerun promises
        "resumed": len(later),
        "resumed_stacks": "\n".join(stack_text(r) for r in later),
        "config": config,
        "data": raw.get("data") if isinstance(raw.get("data"), dict) else {},
        "has_run_json": path.is_file(),
    }


def _run_id(runs_dir: Path, run_dir: Path) -> str:
    rel = run_dir.relative_to(runs_dir).as_posix()
    return rel if rel != "." else run_dir.name


# What makes two runs the same result: found in two sources (the live runs folder and
# committed results of earlier seeds), the first source's copy is kept.
IDENTITY = ("run_id", "dataset", "seed")


def collect(
    runs_dir: Path | Sequence[Path], skip: Path | None = None, relative_to: Path | None = None
) -> Collection:
    """All runs under runs_dir, or under each of several folders, first one first (but the
    file `skip`) → Collection (see its docstring). `run_dir` is relative to `relative_to`
    when given, so committed tables name no path of the machine that made them."""
    sources = [Path(runs_dir)] if isinstance(runs_dir, str | Path) else [Path(d) for d in runs_dir]
    net_rows, run_rows, seen = [], [], set()
    for source, found in zip(sources, find_metrics(sources, skip), strict=True):
        mine = set()
        for path in found:
            run_dir = path.parent
            metrics = read_metrics(path)
            key = tuple(metrics[0][k] for k in IDENTITY)
            if key in seen:  # an earlier folder holds this result already
                continue
            mine.add(key)
            run = _run_id(source, run_dir)
            shown = os.path.relpath(run_dir, relative_to) if relative_to else str(run_dir)
            prov = {**read_provenance(run_dir), "run_path": str(run_dir)}
            run_rows.append({"run": run, "run_dir": shown, **metrics[0], **prov})
            for m in metrics:
                rid = run if m["role"] == "main" else f"{run}#{m['net']}"
                net_rows.append({"run": rid, "run_dir": shown, **m, **prov})
        seen |= mine
    nets = pd.DataFrame(net_rows).drop(columns=["config", "data", "run_id"])
    nets["bits"] = [bits_label(w, a) for w, a in zip(nets["w_bits"], nets["a_bits"], strict=True)]
    for c in (*METRICS, "wall_s", "images_per_s"):
        nets[c] = pd.to_numeric(nets[c], errors="coerce").astype(float)  # None → NaN
    runs = pd.DataFrame(run_rows).drop(columns=["run_id"])
    return Collection(runs_dir=sources[0], nets=nets, runs=runs)


def read_history(run_dir: Path) -> pd.DataFrame | None:
    """history.csv → long curves (net, step, epoch, round, w_bits, a_bits, val_top1,
    train_loss), None if absent.

    `step` is the epoch when epochs increase; multi-round stages (TS, PQ) may restart the
    count each round, and then `step` counts rows (epochs over all rounds) instead.
    """
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return None
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:  # pandas' parser errors are ValueError
        raise LowbitError(f"{path}: cannot read history: {e}") from None
    if "epoch" not in raw.columns:
        raise LowbitError(f"{path}: history has no 'epoch' column")
    nets = ["", *sorted({c.split("/", 1)[0] + "/" for c in raw.columns if "/" in c})]
    epoch = pd.to_numeric(raw["epoch"], errors="coerce")
    step = epoch if epoch.is_monotonic_increasing and epoch.is_unique else raw.index + 1
    parts = []
    for prefix in nets:
        cols = {f"{prefix}{c}": c for c in ("val_top1", "train_loss") if f"{prefix}{c}" in raw}
        if not cols:
            continue
        part = raw[list(cols)].rename(columns=cols).apply(pd.to_numeric, errors="coerce")
        rnd = pd.to_numeric(raw["round"], errors="coerce") if "round" in raw else 1
        part = part.assign(net=prefix.rstrip("/") or "main", step=step, epoch=epoch, round=rnd)
        for c in ("w_bits", "a_bits"):  # the round's bit-widths, to label its start
            part[c] = numeric(raw, c)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else None
