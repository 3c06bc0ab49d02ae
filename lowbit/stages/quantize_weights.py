"""Stage `quantize-weights`: two-stage optimisation, stage 1 (k-bit weights only)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.two_stage import weights_round
from lowbit.stages.training import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    p = cfg.params
    return run_stage(cfg, [weights_round(p.w_bits, p.epochs, p.a_mode)])
