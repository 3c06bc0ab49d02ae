"""Stage `direct`: the baseline — weights and activations quantized at once."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.direct import DIRECT
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, DIRECT)
