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


def _two_seeds(root: Path, second: dict, data: tuple[dict, dict] = ({}, {})) -> None:
    for seed, direct in ((0, {}), (1, second)):
        d = write_run(root, f"seed{seed}/direct/w2a2", stage="direct", method="direct", seed=seed)
        _config(d, **direct)
        raw = json.loads((d / "run.json").read_text())
        raw["data"] = data[seed]
        (d / "run.json").write_text(json.dumps(raw))


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


def test_seeds_trained_on_different_data_are_refused(tmp_path):
    # the 10k-image subset beside the full training set: same params otherwise
    data = ({"source": "cifar10", "counts": {"train": 10000}, "train_per_class": 1000},
            {"source": "cifar10", "counts": {"train": 45000}, "train_per_class": None})  # fmt: skip
    _two_seeds(tmp_path / "runs", {}, data)
    with pytest.raises(LowbitError, match=r"data.counts.train = 10000 .* but 45000"):
        build_report(tmp_path / "runs", tmp_path / "report", reference_dir=None)


def test_a_setting_an_older_run_lacks_is_compared_among_the_others(tmp_path):
    runs = tmp_path / "runs"
    for seed, direct in ((0, None), (1, {"epochs": 6}), (2, {"epochs": 8})):
        d = write_run(runs, f"seed{seed}/direct/w2a2", stage="direct", method="direct", seed=seed)
        _config(d, **(direct or {}))
        if direct is None:  # written before `epochs` was recorded
            raw = json.loads((d / "run.json").read_text())
            del raw["config"]["direct"]["epochs"]
            (d / "run.json").write_text(json.dumps(raw))
    with pytest.raises(LowbitError, match=r"direct.epochs = 6 in .* \(seed 1\) but 8"):
        build_report(runs, tmp_path / "report", reference_dir=None)


def test_progress_bars_are_not_a_recipe():
    a = flat_recipe({"common": {"progress": None, "model": "resnet20"}})
    assert differences(a, flat_recipe({"common": {"progress": False, "model": "resnet20"}})) == []
