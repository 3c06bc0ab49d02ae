"""The settings of joint knowledge distillation (joint_distill.py): the `kd:` block a
training stage's section may set (the stages `distill` and `ts-pq-kd` set it by default).

Pydantic only, no torch: config loading validates the block without loading the method.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class KD(BaseModel):
    """Joint knowledge distillation (paper §4): an FP teacher trained alongside."""

    # strict like every config model (lowbit.config.base._Strict, which this module cannot
    # import: lowbit.config imports this one)
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(1.0, gt=0)
    lambda_t: float = Field(1.0, ge=0)  # teacher cross-entropy
    lambda_s: float = Field(0.7, ge=0)  # student cross-entropy
    lambda_tkl: float = Field(0.5, ge=0)  # teacher <- students
    lambda_skl: float = Field(0.7, ge=0)  # student <- teacher
    loss: Literal["kl", "mse"] = "kl"
    hint_beta: float = Field(0.0, ge=0)  # L2 hint at residual-stage outputs; 0 = off
    teacher_lr: float | None = Field(None, gt=0)  # default: the stage's lr
    teacher_init: Literal["pretrain", "scratch"] = "pretrain"
