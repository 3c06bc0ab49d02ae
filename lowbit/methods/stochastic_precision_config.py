"""The settings of stochastic precision (stochastic_precision.py): the `sp:` block a
training stage's section may set (the stage `stochastic-precision` sets it by default).

Pydantic only, no torch: config loading validates the block without loading the method.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# p(t) steps, as in Dong et al.'s stochastic quantization (BMVC 2017)
DEFAULT_RAMP = (0.5, 0.75, 0.875, 1.0)


class SP(BaseModel):
    """Stochastic precision (paper §3.3; the sampling design is lowbit's)."""

    # strict like every config model (lowbit.config.base._Strict, which this module cannot
    # import: lowbit.config imports this one)
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    unit: Literal["layer", "block"] = "layer"
    ramp: list[float] = list(DEFAULT_RAMP)  # p(t) steps, evenly over ramp_fraction
    ramp_fraction: float = Field(0.5, gt=0, le=1)  # share of training spent ramping
    selection: Literal["uniform", "error"] = "uniform"

    @field_validator("ramp")
    @classmethod
    def _ramp(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("ramp needs at least one probability")
        if any(not 0 <= p <= 1 for p in v):
            raise ValueError(f"ramp probabilities must lie in [0, 1], got {v}")
        if any(b < a for a, b in pairwise(v)) or v[-1] != 1.0:
            raise ValueError(f"ramp must be non-decreasing and end at 1.0, got {v}")
        return v
