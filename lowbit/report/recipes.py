"""Seeds pooled in one table cell must have trained with one recipe.

The run identity (lowbit.identity) keeps apart runs whose *networks* differ (quantizer,
block outputs, FP start, model, tag). A cell's seeds can still differ in their recipe:
an archived seed of an older params.yaml (8 epochs, step schedule) beside a new one
(6 epochs, cosine). Averaging those would report a mean of two experiments, so the
report refuses and names the setting that differs.

Compared: every setting of the runs' resolved configs (run.json `config`) except the
seed and the settings that say where and how a run executed, not what it trained, and
the recipe of the prepared data (run.json `data`: subset size, image size, encoding).
A setting that a run does not record (written by an older lowbit) is compared among the
runs that do.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lowbit.errors import LowbitError

# where and how a run executed: these differ between seeds, machines and executors
EXECUTION = {
    "common.seed", "common.runs_dir", "common.live_dir", "common.data_dir",
    "common.data_root", "common.reports_dir", "common.executor", "common.device",
    "common.workers", "common.loader", "common.keep_resume", "common.compile",
    "common.channels_last", "common.progress",
}  # fmt: skip
EXECUTION_SECTIONS = ("base_dir", "stage", "slurm")


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: leaf value}; an empty dict is a leaf.

    >>> flat_config({"common": {"seed": 3}, "kd": {}})
    {'common.seed': 3, 'kd': {}}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _execution(key: str) -> bool:
    # a seed, wherever a config keeps it, is what the cell pools over
    parts = key.split(".")
    return key in EXECUTION or parts[-1] == "seed" or parts[0] in EXECUTION_SECTIONS


def flat_recipe(config: Any) -> dict[str, Any]:
    """A resolved config as {dotted key: value}, without the execution settings.

    >>> flat_recipe({"common": {"seed": 3, "model": "resnet20"}, "direct": {"optim": {"lr": 0.1}}})
    {'common.model': 'resnet20', 'direct.optim.lr': 0.1}
    """
    flat = flat_config(config if isinstance(config, dict) else {})
    return {k: v for k, v in sorted(flat.items()) if not _execution(k)}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings both recipes record with different values."""
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def check_pooled(runs: pd.DataFrame, cell: list[str]) -> None:
    """Raise LowbitError if the runs grouped by `cell` (one table cell each) were trained
    with different recipes; runs (one row per run, its main network's) needs `config`,
    `data` (lowbit.report.collect), `run_dir` and `seed`."""
    if "config" not in runs or runs.empty:
        return
    for key, group in runs.groupby(cell, sort=False, dropna=False):
        # each setting's first recorded value and the run that recorded it: a setting an
        # older run lacks is still compared among the runs that have it
        seen: dict[str, tuple[Any, Any]] = {}
        for row in group.itertuples(index=False):
            recipe = flat_recipe({**row.config, "data": row.data})
            diff = differences({k: v for k, (v, _) in seen.items()}, recipe)
            if diff:
                name = " ".join(str(v) for v in key) if isinstance(key, tuple) else str(key)
                raise LowbitError(_refusal(name, diff, seen, recipe, row))
            seen |= {k: (v, row) for k, v in recipe.items() if k not in seen}


def _refusal(cell: str, diff: list[str], seen: dict, recipe: dict, row: Any) -> str:
    k = diff[0]
    value, first = seen[k]
    more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
    return (
        f"report: one cell ({cell}) would average seeds of different recipes: {k} = "
        f"{value!r} in {first.run_dir} (seed {first.seed}) but {recipe[k]!r} in "
        f"{row.run_dir} (seed {row.seed}){more}; archive the older seeds again with the "
        "current params.yaml, or give one recipe its own tag"
    )
