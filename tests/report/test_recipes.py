"""A table cell never averages seeds trained with different recipes (lowbit.report.recipes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowbit.errors import LowbitError
from lowbit.report import build_report
from lowbit.report.recipes import differences, flat_recipe
from tests.report.synth import write_run


def _config(run_dir: Path, **direct: object) -> None:
    """Give a synthetic run a resolved config as the stages write it."""
    path = run_dir / "run.json"
    raw = json.loads(path.read_text())
    seed = json.loads((run_dir / "metrics.json").read_text())["seed"]
    raw["config"] = {
        "stage": "direct",
        "base_dir": f"/home/u/seed{seed}",
        "common": {"seed": seed, "runs_dir": f"runs/seed{seed}", "model": "resnet20",
                   "device": "cuda" if seed else "cpu"},
        "direct": {"epochs": 6, "optim": {"lr": 0.02, "schedule": "cosine"}, **direct},
        "slurm": {"profile": f"p{seed}"},
    }  # fmt: skip
    path.write_text(json.dumps(raw))


def _two_seeds(root: Path, second: dict) -> None:
    for seed, direct in ((0, {}), (1, second)):
        d = write_run(root, f"seed{seed}/direct/w2a2", stage="direct", method="direct", seed=seed)
        _config(d, **direct)


def test_seeds_that_differ_only_in_where_and_how_they_ran_are_pooled(tmp_path):
    _two_seeds(tmp_path / "runs", {})  # other seed, folders, device and SLURM profile
    summary = build_report(tmp_path / "runs", tmp_path / "report", reference_dir=None)
    assert summary["runs"] == 2
    table = (tmp_path / "report" / "tables").glob("*best*.md")
    assert any("n=2" in t.read_text() for t in table)


@pytest.mark.parametrize(
    ("second", "key"),
    [
        ({"epochs": 8}, "direct.epochs"),
        ({"optim": {"lr": 0.02, "schedule": "step"}}, "direct.optim.schedule"),
    ],
)
def test_seeds_of_different_recipes_are_refused_naming_the_setting(tmp_path, second, key):
    _two_seeds(tmp_path / "runs", second)
    with pytest.raises(LowbitError, match=rf"different recipes: {key} = .* \(seed 0\) but"):
        build_report(tmp_path / "runs", tmp_path / "report", reference_dir=None)
    assert not (tmp_path / "report").exists()  # refused before anything was written


def test_a_setting_only_one_run_records_is_not_a_difference():
    old = flat_recipe({"common": {"model": "resnet20"}, "direct": {"epochs": 6}})
    new = flat_recipe(
        {"common": {"model": "resnet20", "fp_start": "relu"}, "direct": {"epochs": 6}}
    )
    assert differences(old, new) == []
    assert differences(old, {**new, "direct.epochs": 8}) == ["direct.epochs"]
