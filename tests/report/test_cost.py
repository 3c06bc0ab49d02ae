"""Cost and convergence beside each result, the equal-cost view, results of earlier seeds
read from a committed folder, and paths in committed tables relative to the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lowbit.archive import archive
from lowbit.errors import ConfigError
from lowbit.report import build_report
from lowbit.report.collect import collect
from lowbit.report.cost import CONVERGED, equal_cost_table, results_table
from tests.report.synth import write_run

RUNS = [  # folder, stage, method, seed, best top-1, budget, extra, cost_s, late gain, tag
    ("direct/s0", "direct", "direct", 0, 50.0, 12, 0, 100.0, 0.2, ""),
    ("direct/s1", "direct", "direct", 1, 52.0, 12, 0, 110.0, 0.4, ""),
    ("long/s0", "direct", "direct", 0, 53.0, 24, 0, 200.0, 0.1, "long"),
    ("ts/s0", "quantize-activations", "ts", 0, 55.0, 15, 3, 130.0, 0.3, ""),
    ("ts/s1", "quantize-activations", "ts", 1, 57.0, 15, 3, 140.0, 2.5, ""),
    ("kd/s0", "distill", "kd", 0, 56.0, 24, 12, 260.0, 0.0, ""),
    ("tspqkd/s0", "ts-pq-kd", "ts+pq+kd", 0, 58.0, 54, 42, 600.0, 0.5, ""),
]
P_VALUES = {"ts/s1": 0.012}  # McNemar's p where the run counted it (older runs did not)


def _write(root: Path) -> Path:
    for name, stage, method, seed, top1, budget, extra, cost, gain, tag in RUNS:
        write_run(root, name, stage=stage, method=method, seed=seed, best_top1=top1,
                  budget_epochs=budget, extra_epochs=extra, cost_s=cost, cost_cpu_s=2 * cost,
                  late_gain=gain, late_p=P_VALUES.get(name),
                  converged=gain <= 1.0, tag=tag, history=False)  # fmt: skip
    return root


def test_results_table_puts_cost_and_convergence_beside_each_result(tmp_path: Path) -> None:
    nets = collect(_write(tmp_path / "runs")).nets
    t = results_table(nets, "resnet20", "digits").set_index("method")
    assert t.loc["direct", "seeds"] == 2 and t.loc["direct", "best top-1"] == "51.0 ± 1.4"
    assert t.loc["direct", "cost (net-epochs)"] == "12"
    assert t.loc["direct", "cost (wall s)"] == "105 ± 7"
    assert t.loc["direct", "cost (CPU s)"] == "210 ± 14"  # both threads busy
    assert t.loc["ts", "of which extra"] == "3"
    assert CONVERGED == "converged (gain ≤ 1 or p ≥ 0.05)"
    assert t.loc["ts", CONVERGED] == "1/2 (not: seed 1 +2.5, p 0.012)"
    assert t.loc["direct", CONVERGED] == "2/2"
    assert t.loc["direct (long)", "cost (net-epochs)"] == "24"  # a tagged run is its own row


def test_equal_cost_view_picks_the_cheapest_direct_run_that_spent_as_much(tmp_path) -> None:
    nets = collect(_write(tmp_path / "runs")).nets
    t = equal_cost_table(nets, "resnet20", "digits").set_index("method")
    assert list(t.index) == ["ts", "kd", "ts+pq+kd"]
    assert t.loc["ts", "direct run"] == "direct (long)" and t.loc["ts", "its cost"] == "24"
    assert t.loc["ts", "Δ top-1"] == "+3.0"  # 56.0 against 53.0
    assert t.loc["kd", "direct run"] == "direct (long)"  # 24 >= 24
    assert t.loc["ts+pq+kd", "its cost"] == "< 24"  # no direct run spent 54


def test_earlier_seeds_come_from_a_committed_folder_once(tmp_path: Path) -> None:
    live = _write(tmp_path / "runs")
    results = tmp_path / "results"
    write_run(results, "seed0/direct", stage="direct", method="direct", seed=0, best_top1=1.0)
    write_run(results, "seed2/direct", stage="direct", method="direct", seed=2, best_top1=54.0)
    col = collect([live, results, tmp_path / "absent"])
    direct = col.nets[col.nets["method"] == "direct"].sort_values("seed")
    assert list(direct["seed"]) == [0, 1, 2]
    assert list(direct["best_top1"]) == [50.0, 52.0, 54.0]  # seed 0: the live copy


def test_committed_tables_name_no_path_of_this_machine(tmp_path: Path) -> None:
    runs = _write(tmp_path / "runs")
    build_report(runs, tmp_path / "out", reference_dir=None)
    for name in ("results.csv", "runs.csv"):
        frame = pd.read_csv(tmp_path / "out" / name)
        assert not frame["run_dir"].str.startswith("/").any(), name
        assert (frame["run_dir"].str.startswith("../runs/")).all(), name
        assert str(tmp_path) not in (tmp_path / "out" / name).read_text()


def test_archive_copies_the_small_files_per_seed_and_refuses_to_overwrite(tmp_path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "direct/w2a2", stage="direct", seed=3)
    write_run(runs, ".resume/direct/_", seed=3)  # resume state: never archived
    (runs / "direct/w2a2/model.pt").write_bytes(b"big")
    out = archive(runs, tmp_path / "results")
    assert out == [tmp_path / "results/seed3/direct/w2a2"]
    assert sorted(p.name for p in out[0].iterdir()) == ["history.csv", "metrics.json", "run.json"]
    assert archive(runs, tmp_path / "results") == out  # same files again: fine
    m = json.loads((runs / "direct/w2a2/metrics.json").read_text())
    (runs / "direct/w2a2/metrics.json").write_text(json.dumps({**m, "best_top1": 1.0}))
    with pytest.raises(ConfigError, match="already holds other results"):
        archive(runs, tmp_path / "results")
    assert json.loads((out[0] / "metrics.json").read_text())["best_top1"] == m["best_top1"]
    archive(runs, tmp_path / "results", force=True)
    assert json.loads((out[0] / "metrics.json").read_text())["best_top1"] == 1.0
