"""Stage `stochastic-precision`: one-stage training through random quantized
sub-networks (SP); the `sp` section block configures the sampling."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.errors import ConfigError
from lowbit.methods.direct import direct_rounds
from lowbit.stages.training import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    p = cfg.params
    if p.sp is None:
        raise ConfigError("stochastic_precision.sp must not be null")
    return run_stage(cfg, direct_rounds(p.w_bits, p.a_bits, p.epochs))
