"""Stage `quantize-activations`: two-stage optimisation, stage 2 (activations too)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.two_stage import activations_round
from lowbit.stages.training import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    p = cfg.params
    return run_stage(cfg, [activations_round(p.w_bits, p.a_bits, p.epochs)])
