"""Turn every stage's outputs into paper-style tables, plots and a generated README.

    from lowbit.report import build_report
    summary = build_report(Path("runs"), Path("reports"))

Importing this package is light (no pandas, seaborn or torch): the work lives in
lowbit.report.build and its helpers, imported when build_report is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["build_report"]

# reports/reference in a source checkout: lowbit/report/__init__.py → repo root is parents[2].
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reports" / "reference"


def build_report(
    runs_dir: Path | list[Path],
    out_dir: Path,
    reference_dir: Path | None = DEFAULT_REFERENCE_DIR,
    title: str = "lowbit report",
    dataset: str | None = None,
    notes: Path | None = None,
) -> dict[str, Any]:
    """Collect every run under runs_dir (or several folders: the live runs, then committed
    results of earlier seeds, each result once, the first folder's copy); write tables,
    plots, results.csv and README.md under out_dir; return the summary written to
    out_dir/metrics.json (tables.summary_metrics), with `runs`, the number of runs read.

    Raises LowbitError for a missing runs_dir, no runs, or a malformed metrics.json (the
    message names the file). reference_dir=None shows no published numbers. dataset, when
    given, names the data of every run (an `imagefolder` run is then "imagenet", say), so
    tables are titled by it and published numbers of that dataset appear beside ours.
    notes, a Markdown file, ends the report's Accounting section (how the study was sized).
    """
    from lowbit.report.build import build  # lazy: pandas and friends load only when used

    dirs = [Path(runs_dir)] if isinstance(runs_dir, str | Path) else [Path(d) for d in runs_dir]
    return build(dirs, Path(out_dir), reference_dir, title, dataset, notes)
