"""Stage `ts-pq-kd`: the paper's full combination, TS + PQ + KD: progressive bit decay
whose every step quantizes weights first, then activations, beside a jointly trained
full-precision teacher (the `kd` block of the section)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.bit_decay import decay_rounds
from lowbit.stages.training import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    p = cfg.params
    rounds = decay_rounds(p.steps(), p.epochs, p.two_stage, p.total_epochs, p.step_epochs)
    return run_stage(cfg, rounds)
