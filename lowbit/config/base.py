"""The strict base of every config model, and the names of the stages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

STAGES = (
    "prepare",
    "pretrain",
    "direct",
    "quantize-weights",
    "quantize-activations",
    "bit-decay",
    "stochastic-precision",
    "distill",
    "ts-pq-kd",
    "report",
)
TRAINING_STAGES = STAGES[1:-1]
QUANT_STAGES = STAGES[2:-1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
