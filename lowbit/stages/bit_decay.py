"""Stage `bit-decay`: progressive bit-width decay down to the target (PQ)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.bit_decay import BIT_DECAY
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, BIT_DECAY)
