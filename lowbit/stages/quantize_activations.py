"""Stage `quantize-activations`: two-stage optimisation, stage 2 (activations too)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.two_stage import TS_ACTIVATIONS
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, TS_ACTIVATIONS)
