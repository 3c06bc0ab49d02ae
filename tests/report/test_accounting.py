"""The report's accounting: per-seed cost from each run's own numbers, throughput per kind
of run, the pipeline's sizing notes, and a report built from committed results alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbit.errors import LowbitError
from lowbit.report import build_report
from lowbit.report.accounting import cost_table, render, throughput_table
from lowbit.report.collect import collect
from tests.report.synth import write_run


def _runs(root: Path) -> Path:
    for seed in (0, 1):
        write_run(root, f"s{seed}/fp", stage="pretrain", method="fp", w_bits=32, a_bits=32,
                  seed=seed, epochs=30, budget_epochs=30, wall_s=600.0, cpu_s=1200.0,
                  images_per_s=500.0 + seed, history=False)  # fmt: skip
        # TS's budget (15) adds its stage 1's 3 epochs: the accounting counts own epochs only
        write_run(root, f"s{seed}/ts", seed=seed, epochs=12, budget_epochs=15, networks=1,
                  wall_s=300.0, cpu_s=600.0, images_per_s=400.0, history=False)  # fmt: skip
    write_run(root, "s0/kd", stage="distill", method="kd", epochs=12, networks=2,
              budget_epochs=24, wall_s=900.0, cpu_s=1800.0, images_per_s=200.0,
              history=False)  # fmt: skip
    return root


def test_cost_per_seed_counts_own_epochs_times_networks(tmp_path: Path) -> None:
    runs = collect(_runs(tmp_path / "runs")).runs
    t = cost_table(runs).set_index("seed")
    assert list(t.index) == ["0", "1", "all"]
    assert t.loc["0", "runs"] == 3 and t.loc["0", "network-epochs"] == "66"  # 30 + 12 + 2×12
    assert t.loc["1", "network-epochs"] == "42" and t.loc["all", "network-epochs"] == "108"
    assert t.loc["all", "of which FP pretraining"] == "60"
    assert t.loc["0", "wall (h)"] == "0.50" and t.loc["0", "CPU (h)"] == "1.00"  # 1800 s, 3600 s
    assert t.loc["all", "wall (h)"] == f"{(1800 + 900) / 3600:.2f}"


def test_throughput_per_kind_of_run(tmp_path: Path) -> None:
    runs = collect(_runs(tmp_path / "runs")).runs
    t = throughput_table(runs).set_index("run kind")
    fp = t.loc["full precision, one network"]
    assert (fp["runs"], fp["images/s median"], fp["images/s best"]) == (2, "500", "501")
    assert t.loc["low-bit, one network", "images/s best"] == "400"
    assert t.loc["low-bit student + FP teacher", "runs"] == 1


@pytest.mark.parametrize("live_exists", [True, False], ids=["empty live folder", "no live folder"])
def test_report_from_committed_results_alone_with_notes(tmp_path: Path, live_exists) -> None:
    live = tmp_path / "runs"
    if live_exists:
        live.mkdir()  # a fresh clone: no live runs, only the committed seeds
    results = _runs(tmp_path / "results")
    notes = tmp_path / "sizing.md"
    notes.write_text("### How this study was sized\n\n10,000 images, 12 epochs.\n")
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="the report shows the committed results only"):
        summary = build_report([live, results], out, reference_dir=None, notes=notes)
    assert summary["runs"] == 5
    readme = (out / "README.md").read_text()
    accounting = readme[readme.index("## Accounting") :]
    assert "| all | 5 | 108 | 60 |" in accounting
    assert "10,000 images, 12 epochs." in accounting.split("## Training curves")[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowbitError, match="no runs found under .*runs, .*empty"):
        collect([live, tmp_path / "empty"])
    with pytest.raises(LowbitError, match="notes file not found"):
        build_report([results], tmp_path / "other", reference_dir=None, notes=tmp_path / "x.md")
    assert not (tmp_path / "other").exists()  # refused before writing anything


def test_a_run_in_both_folders_is_counted_once(tmp_path: Path) -> None:
    live = _runs(tmp_path / "runs")
    results = _runs(tmp_path / "results")
    t = cost_table(collect([live, results]).runs).set_index("seed")
    assert t.loc["all", "runs"] == 5 and t.loc["all", "network-epochs"] == "108"


def test_unknown_seconds_and_rates_are_marked_not_dropped(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs")
    write_run(runs, "s1/old", seed=1, epochs=12, wall_s=None, images_per_s=None, history=False)
    t = cost_table(collect(runs).runs).set_index("seed")
    assert t.loc["1", "CPU (h)"] == f"≥ {1800 / 3600:.2f} (1 unknown)"
    assert t.loc["1", "network-epochs"] == "54"  # no `networks` recorded: one network
    bare = tmp_path / "bare"
    write_run(bare, "a", wall_s=None, images_per_s=None, history=False)
    text = render(collect(bare).runs)
    assert "No run recorded its images/s." in text and "| all | 1 | 6 | 0 | — | — |" in text
