"""Stage `report`: every stage's metrics → tables, plots and reports/README.md."""

from __future__ import annotations

from lowbit.config import StageConfig


def run(cfg: StageConfig) -> dict[str, float]:
    from lowbit.report import build_report

    out = cfg.path(cfg.common.reports_dir)
    return build_report(cfg.runs_dir, out, title=cfg.params.title, dataset=cfg.params.dataset)
