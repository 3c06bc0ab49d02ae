"""Figures: what each plot draws is the runs' numbers (read back from the matplotlib
figure), and training curves label round boundaries with the new round's bit-width."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lowbit.report import build_report, plots
from lowbit.report.collect import read_history
from lowbit.report.plots import _round_starts
from tests.report.synth import paper_runs, write_run

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def test_round_starts_are_labelled_with_the_new_rounds_bits(tmp_path: Path) -> None:
    run = write_run(tmp_path, "pq", stage="bit-decay", method="pq", history=False)
    rows = [(1, 1, 8, 8), (2, 1, 8, 8), (1, 2, 4, 4), (2, 2, 4, 4), (1, 3, 2, 2), (2, 3, 2, 2)]
    (run / "history.csv").write_text(
        "epoch,round,w_bits,a_bits,val_top1,train_loss\n"
        + "".join(f"{e},{r},{w},{a},50,1\n" for e, r, w, a in rows)
    )
    hist = read_history(run)
    assert list(hist["w_bits"]) == [8, 8, 4, 4, 2, 2]
    assert _round_starts(hist) == [(2.5, "W4A4"), (4.5, "W2A2")]
    (run / "history.csv").write_text("epoch,round,val_top1\n1,1,50\n1,2,60\n")
    assert _round_starts(read_history(run)) == [(1.5, "")]  # bits not recorded: no label


def _figures(tmp_path: Path, monkeypatch) -> dict[str, Figure]:
    """build_report on the synthetic paper runs; every figure it saves, by file name."""
    figs: dict[str, Figure] = {}
    save = plots.save

    def keep(fig: Figure, out_dir: Path, name: str, *args, **kwargs):
        figs[name] = fig
        return save(fig, out_dir, name, *args, **kwargs)

    monkeypatch.setattr(plots, "save", keep)
    build_report(paper_runs(tmp_path / "runs"), tmp_path / "out", title="t")
    return figs


def test_the_bits_plot_draws_each_methods_seed_mean_and_sd(tmp_path: Path, monkeypatch) -> None:
    """The plotted points are the runs' numbers: per method and bit-width the mean best
    top-1 over seeds (ts at W2A2: seeds 90, 91, 92), its ± sd bar, and the FP line."""
    ax = _figures(tmp_path, monkeypatch)["top1_vs_bits_resnet20_digits"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["W2A2", "W4A4"]
    points = [ln for ln in ax.lines if ln.get_marker() == "o" and len(ln.get_xdata())]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:-1] == ["direct", "ts", "pq", "sp", "kd", "ts+pq+kd"]  # the paper's order
    nan = float("nan")
    want = [[88, nan], [91, 94], [90.5, nan], [89.5, nan], [92.5, nan], [93.5, nan]]
    for method, line, ys in zip(legend[:-1], points, want, strict=True):
        np.testing.assert_allclose(line.get_ydata(), ys, err_msg=method)
    ts_bar = ax.lines[ax.lines.index(points[1]) + 1]  # seaborn: each line, then its bars
    np.testing.assert_allclose(np.nanmin(ts_bar.get_ydata()), 90.0)  # 91 - sd 1
    np.testing.assert_allclose(np.nanmax(ts_bar.get_ydata()), 92.0)
    fp = next(ln for ln in ax.lines if ln.get_linestyle() == "--")
    assert legend[-1] == "fp 32/32 (95.0)" and list(fp.get_ydata()) == [95.0, 95.0]


def test_the_cost_plot_places_every_run_at_its_budget(tmp_path: Path, monkeypatch) -> None:
    fig = _figures(tmp_path, monkeypatch)["cost_resnet20_digits"]
    budget = next(ax for ax in fig.axes if "budget" in ax.get_xlabel())
    xy = sorted(map(tuple, budget.collections[0].get_offsets().tolist()))
    # 11 resnet20 runs; PQ's rounds cost 24 network-epochs, every other run 12
    assert len(xy) == 11 and (24.0, 90.5) in xy
    assert sorted(y for _, y in xy) == [88, 89.5, 90, 90.5, 91, 92, 92.5, 93, 93.5, 94, 95]
    assert {x for x, y in xy if y != 90.5} == {12.0}
