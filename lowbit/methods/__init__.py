"""The paper's methods as composable pieces the engine calls with an explicit step.

- direct.py: weights and activations quantized together at the target bits.
- two_stage.py: k-bit weights first, then activations too (paper §3.2, TS).
- bit_decay.py: progressive bit-width decay, e.g. 8 → 4 → 2 (paper §3.2, PQ).
- stochastic_precision.py: random quantized sub-networks, ramping to all (paper §3.3, SP).
- joint_distill.py: an FP teacher and low-bit students trained together (paper §4, KD).
"""

from lowbit.methods.bit_decay import Round, decay_rounds
from lowbit.methods.direct import direct_rounds
from lowbit.methods.joint_distill import JointDistillation, kd_losses
from lowbit.methods.stochastic_precision import StochasticPrecision, sp_probability
from lowbit.methods.two_stage import two_stage_rounds

__all__ = [
    "JointDistillation",
    "Round",
    "StochasticPrecision",
    "decay_rounds",
    "direct_rounds",
    "kd_losses",
    "sp_probability",
    "two_stage_rounds",
]
