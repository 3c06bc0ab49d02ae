"""Stage `report`: every stage's metrics → tables, plots and reports/README.md."""

from __future__ import annotations

from lowbit.config import StageConfig


def run(cfg: StageConfig) -> dict[str, float]:
    from lowbit.report import build_report

    out = cfg.path(cfg.common.reports_dir)
    dirs = [cfg.runs_dir, *(cfg.path(d) for d in cfg.params.results)]
    notes = cfg.path(cfg.params.notes) if cfg.params.notes else None
    return build_report(dirs, out, title=cfg.params.title, dataset=cfg.params.dataset, notes=notes)
