"""The results committed with lowbit (each finished seed's metrics.json, history.csv and
run.json under <pipeline>/results/seed<N>/) still load with the current code, and a
report can be built from them: a later change cannot silently break them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbit.identity import RunId
from lowbit.metrics import read_run_metrics
from lowbit.report import build_report
from lowbit.report.collect import collect, read_history

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted({p.parent for p in ROOT.glob("**/results*/seed*") if ".venv" not in p.parts})


def test_every_pipeline_has_a_results_folder():
    for where in (ROOT, *sorted((ROOT / "pipeline").iterdir())):
        assert (where / "results" / "README.md").is_file(), where


@pytest.mark.parametrize("folder", FOLDERS, ids=[str(f.relative_to(ROOT)) for f in FOLDERS])
def test_every_committed_run_lies_where_its_identity_says(folder: Path) -> None:
    """seed<N>/<stage>/<slug>/ (lowbit.identity): what `lowbit archive` writes today, so an
    archive of the same run finds it, and two runs that differ never share a folder."""
    for m in sorted(folder.rglob("metrics.json")):
        rec = read_run_metrics(m).model_dump()
        run = RunId.of(rec, m.parent.name)
        where = f"seed{rec['seed']}/{run.stage}/{run.slug()}"
        assert m.parent.relative_to(folder).as_posix() == where


@pytest.mark.parametrize("folder", FOLDERS, ids=[str(f.relative_to(ROOT)) for f in FOLDERS])
def test_committed_results_load_and_report(folder: Path, tmp_path: Path) -> None:
    runs = sorted(folder.rglob("metrics.json"))
    assert runs, folder
    for m in runs:
        metrics = read_run_metrics(m)  # the one schema, as the report reads it
        assert metrics.seed == int(m.relative_to(folder).parts[0].removeprefix("seed"))
        hist = read_history(m.parent)
        assert hist is not None and not hist.empty, m.parent
        assert (m.parent / "run.json").is_file(), m.parent
    col = collect(folder)
    assert len(col.runs) == len(runs)
    summary = build_report(folder, tmp_path / "report", reference_dir=None)
    assert summary["runs"] == len(runs)
