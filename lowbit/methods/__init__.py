"""The paper's methods as composable pieces the engine calls with an explicit step.

Every method implements one interface (base.py): `recipe(ctx) -> Recipe`. A stage runs
its stage method (direct, two-stage, bit decay, FP pretraining: the rounds) and the
add-ons its config switches on (joint distillation, stochastic precision).

- direct.py: weights and activations quantized together at the target bits.
- two_stage.py: k-bit weights first, then activations too (paper §3.2, TS).
- bit_decay.py: progressive bit-width decay, e.g. 8 → 4 → 2 (paper §3.2, PQ).
- stochastic_precision.py: random quantized sub-networks, ramping to all (paper §3.3, SP).
- joint_distill.py: an FP teacher and low-bit students trained together (paper §4, KD).
"""

from typing import Any

from lowbit.methods.base import Context, Method, Recipe, combine, label
from lowbit.methods.bit_decay import BIT_DECAY, Round, decay_rounds
from lowbit.methods.direct import DIRECT, direct_rounds
from lowbit.methods.full_precision import FULL_PRECISION
from lowbit.methods.joint_distill import JOINT_DISTILLATION, JointDistillation, kd_losses
from lowbit.methods.stochastic_precision import (
    STOCHASTIC_PRECISION,
    StochasticPrecision,
    sp_probability,
)
from lowbit.methods.two_stage import TS_ACTIVATIONS, TS_WEIGHTS, two_stage_rounds

# Add-ons: a stage runs each one whose config block (named like the add-on) its section
# sets, e.g. `kd:` or `sp:` in any quantized stage.
ADD_ONS: tuple[Method, ...] = (JOINT_DISTILLATION, STOCHASTIC_PRECISION)


def add_ons(params: Any) -> list[Method]:
    """The add-ons a stage section switches on."""
    return [a for a in ADD_ONS if getattr(params, a.name, None) is not None]


__all__ = [
    "ADD_ONS", "BIT_DECAY", "DIRECT", "FULL_PRECISION", "JOINT_DISTILLATION",
    "STOCHASTIC_PRECISION", "TS_ACTIVATIONS", "TS_WEIGHTS", "Context", "JointDistillation",
    "Method", "Recipe", "Round", "StochasticPrecision", "add_ons", "combine", "decay_rounds",
    "direct_rounds", "kd_losses", "label", "sp_probability", "two_stage_rounds",
]  # fmt: skip
