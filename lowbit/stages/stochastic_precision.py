"""Stage `stochastic-precision`: one-stage training through random quantized
sub-networks (SP): one direct round with the `sp` add-on, which the section sets by
default."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.direct import DIRECT
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, DIRECT)
