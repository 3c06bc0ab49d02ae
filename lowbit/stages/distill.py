"""Stage `distill`: joint knowledge distillation — an FP teacher trained alongside the
low-bit student(s); the student starts from `init` (e.g. bit-decay for TS+PQ+KD)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.direct import direct_rounds
from lowbit.stages.training import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    p = cfg.params
    return run_stage(cfg, direct_rounds(p.w_bits, p.a_bits, p.epochs), tuple(p.students))
