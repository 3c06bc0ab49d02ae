"""Stage `quantize-weights`: two-stage optimisation, stage 1 (k-bit weights only)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.two_stage import TS_WEIGHTS
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, TS_WEIGHTS)
