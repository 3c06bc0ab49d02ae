"""Stage `pretrain`: the full-precision network every quantized stage starts from."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.full_precision import FULL_PRECISION
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, FULL_PRECISION)
