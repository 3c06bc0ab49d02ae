"""Stage `distill`: joint knowledge distillation — an FP teacher trained alongside the
low-bit student(s): one direct round with the `kd` add-on, which the section sets by
default; the student starts from `init` (e.g. bit-decay for PQ+KD)."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.methods.direct import DIRECT
from lowbit.training.run import run_stage


def run(cfg: StageConfig) -> dict[str, float]:
    return run_stage(cfg, DIRECT)
