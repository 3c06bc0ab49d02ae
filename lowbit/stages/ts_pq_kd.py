"""Stage `ts-pq-kd`: the paper's full combination, TS + PQ + KD: progressive bit decay
whose every step quantizes weights first, then activations, beside a jointly trained
full-precision teacher (the `kd` add-on, which the section sets by default)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.bit_decay import BIT_DECAY
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, BIT_DECAY)
