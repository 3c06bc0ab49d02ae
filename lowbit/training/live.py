"""A training stage's live log: dvclive for DVC, one summary line per epoch for people.

Per epoch (dvclive step = the epoch over all rounds of the stage, so a PQ run's curves are
one line with its bit-width changes in `bits/w` and `bits/a`), for the main network
`train/loss`, `train/top1`, `val/loss`, `val/top1`, `val/top5` (validated epochs only),
`lr`, and the same under `<net>/…` for the others (what the add-ons train beside it).
The log lives outside the stage's output folder, so it grows while the stage runs and
DVC can declare it as the stage's metrics and plots: dvclive's plots/metrics/*.tsv in
`<common.live_dir>/<stage>/<slug>/`, its metrics file in
`<common.live_dir>/metrics/<stage>/<slug>.json` (lowbit.identity names the run), so that
a stage's plots folder holds plots only and its metrics folder metrics only.

A stage always starts a fresh log and replays the epochs its checkpoints restore before
training on (the engine calls `on_epoch_end` for those too), so the log of a killed and
resumed stage equals an uninterrupted one. No timing goes into it: timings differ run to
run and live in history.csv. When the stage ends, metrics.json is replaced by a few
scalar keys (SUMMARY_KEYS), one readable row per run in `dvc metrics show`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

LOG = logging.getLogger("lowbit")
# Per network: history key suffix → dvclive metric name
METRICS = {
    "train_loss": "train/loss",
    "train_top1": "train/top1",
    "val_loss": "val/loss",
    "val_top1": "val/top1",
    "val_top5": "val/top5",
    "lr": "lr",
}
# What `dvc metrics show` lists per run: what it measured. Its cost (budget_epochs) follows
# from params.yaml and is in the run's metrics.json and the report.
SUMMARY_KEYS = ("top1", "best_top1")


def ensure_logging() -> None:
    """Per-epoch lines to stderr (a SLURM job's log shows how far it got), once."""
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("lowbit: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def _live_class() -> type:
    """dvclive's Live, also at home in a git repository that has no commit yet (`git init`,
    `dvc init`, `dvc repro`): dvclive 3.49 reads HEAD there before it checks for commits and
    raises; with no commit there is no experiment to link the log to, so it logs without."""
    from dvclive import Live  # imported here: `import lowbit` stays light
    from scmrepo.exceptions import SCMError

    class _Live(Live):
        metrics_path: str | None = None  # set before __init__: where the summary goes

        @property
        def metrics_file(self) -> str:
            return self.metrics_path or super().metrics_file

        def _init_dvc(self) -> None:
            try:
                super()._init_dvc()
            except SCMError:
                self._dvc_repo = None

    return _Live


class RunLog:
    """dvclive + log lines for one stage run; `epoch(row)` once per epoch, in order."""

    def __init__(self, where: tuple[Path, Path] | None, label: str, nets: list[str]) -> None:
        """where: (dvclive's folder, its metrics file), or None for no dvclive log."""
        self.label, self.nets, self.live = label, nets, None
        if where is not None:
            cls = _live_class()
            cls.metrics_path = str(where[1])
            where[1].parent.mkdir(parents=True, exist_ok=True)
            where[1].unlink(missing_ok=True)  # a fresh log (dvclive clears only its folder)
            # dvcyaml=None: the pipeline's dvc.yaml declares these files; no experiment
            # of its own (inside `dvc exp run` DVC makes the experiment).
            self.live = cls(str(where[0]), resume=False, save_dvc_exp=False, dvcyaml=None)

    def epoch(self, row: dict[str, float], step: int, rounds: str) -> None:
        """Log one epoch (`row` as the engine writes it, `step` 0-based over all rounds)."""
        if self.live is not None:
            self.live.step = step
            for i, net in enumerate(self.nets):
                prefix = "" if i == 0 else f"{net}/"
                for key, name in METRICS.items():
                    v = row.get(f"{net}/{key}", math.nan)
                    if math.isfinite(v):
                        self.live.log_metric(prefix + name, float(v))
            self.live.log_metric("bits/w", int(row.get("w_bits", 32)))
            self.live.log_metric("bits/a", int(row.get("a_bits", 32)))
            self.live.next_step()
        LOG.info(_line(self.label, row, self.nets[0], rounds))

    def close(self, metrics: dict[str, Any]) -> None:
        """Replace the summary by a few scalars of the finished run."""
        if self.live is None:
            return
        self.live.summary = {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}
        self.live.make_summary()


def _line(label: str, row: dict[str, float], net: str, rounds: str) -> str:
    """ "direct w2a2 round 1/1 epoch 3/8: train loss 0.412 top-1 86.2 | val top-1 88.1 | …" """
    val = row.get(f"{net}/val_top1", math.nan)
    shown = f"{val:.1f}" if math.isfinite(val) else "-"
    return (
        f"{label} round {rounds} epoch {int(row['epoch'])}: "
        f"train loss {row.get(f'{net}/train_loss', math.nan):.3f} "
        f"top-1 {row.get(f'{net}/train_top1', math.nan):.1f} | val top-1 {shown} | "
        f"lr {row.get(f'{net}/lr', math.nan):.3g} | {row.get('epoch_s', math.nan):.1f} s"
    )
