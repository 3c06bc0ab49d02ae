"""The paper's methods as composable pieces the engine calls with an explicit step.

Every method implements one interface (base.py): `recipe(ctx) -> Recipe`. A stage runs
its stage method (direct, two-stage, bit decay, FP pretraining: the rounds; the table of
stages, lowbit.config.sections.STAGES, names each stage's) and the add-ons its config
switches on (joint distillation, stochastic precision: ADD_ONS below).

- direct.py: weights and activations quantized together at the target bits.
- two_stage.py: k-bit weights first, then activations too (paper §3.2, TS).
- bit_decay.py: progressive bit-width decay, e.g. 8 → 4 → 2 (paper §3.2, PQ).
- stochastic_precision.py: random quantized sub-networks, ramping to all (paper §3.3, SP);
  its settings (the `sp:` block) in stochastic_precision_config.py.
- joint_distill.py: an FP teacher and low-bit students trained together (paper §4, KD);
  its settings (the `kd:` block) in joint_distill_config.py.

Importing this package loads no torch (config loading reads the add-ons' settings from
it); the names below are imported from their modules on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

# The add-ons, by config block: a stage runs each one whose block its section sets (`kd:`
# or `sp:` in any training stage), in this order. "module:NAME" of the Method.
ADD_ONS: dict[str, str] = {
    "kd": "lowbit.methods.joint_distill:JOINT_DISTILLATION",
    "sp": "lowbit.methods.stochastic_precision:STOCHASTIC_PRECISION",
}


def add_ons(params: Any) -> list[Any]:
    """The add-ons (Methods) a stage section switches on."""
    return [
        pkgutil.resolve_name(ref)
        for block, ref in ADD_ONS.items()
        if getattr(params, block, None) is not None
    ]


_EXPORTS = {
    "base": ("Context", "Method", "Recipe", "combine", "label"),
    "bit_decay": ("BIT_DECAY", "decay_rounds"),
    "rounds": ("Round",),
    "direct": ("DIRECT", "direct_rounds"),
    "full_precision": ("FULL_PRECISION",),
    "joint_distill": ("JOINT_DISTILLATION", "JointDistillation", "kd_losses"),
    "stochastic_precision": ("STOCHASTIC_PRECISION", "StochasticPrecision", "sp_probability"),
    "two_stage": ("TS_ACTIVATIONS", "TS_WEIGHTS", "two_stage_rounds"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """A method's name from its module, imported now (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = ["ADD_ONS", "add_ons", *sorted(_WHERE)]
