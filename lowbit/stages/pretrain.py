"""Stage `pretrain`: the full-precision network every quantized stage starts from."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.rounds import Round
from lowbit.quant.functional import MAX_BITS
from lowbit.stages.training import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, [Round(MAX_BITS, MAX_BITS, cfg.params.epochs, name="fp")])
