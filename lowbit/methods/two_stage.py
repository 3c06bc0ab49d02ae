"""Two-stage optimisation, TS (paper §3.2).

Stage 1 trains k-bit weights with full-precision activations, initialised from the FP
model; stage 2 starts from stage 1 and quantizes the activations to k bits too.
"Full-precision activations" follows the authors' modules: clipped to [0, 1], not
rounded (`a_mode="clip"`, a 32-bit activation quantizer); `a_mode="relu"` switches the
activation quantizers off instead [lowbit option].

Example:
    >>> from lowbit.methods import two_stage_rounds
    >>> [(r.w_bits, r.a_bits, r.epochs) for r in two_stage_rounds(2, 2, 10, 20)]
    [(2, 32, 10), (2, 2, 20)]
"""

from __future__ import annotations

from lowbit.identity import bits_token
from lowbit.methods.base import Context, Recipe
from lowbit.methods.rounds import Round
from lowbit.quant.functional import MAX_BITS


def weights_round(w_bits: int, epochs: int, a_mode: str = "clip") -> Round:
    """Stage 1: k-bit weights; activations clipped (a 32-bit quantizer) or plain ReLU."""
    if a_mode not in ("clip", "relu"):
        raise ValueError(f"a_mode must be 'clip' or 'relu', got {a_mode!r}")
    return Round(w_bits, MAX_BITS, epochs, a_enabled=a_mode == "clip", name=f"w{w_bits}")


def activations_round(w_bits: int, a_bits: int, epochs: int) -> Round:
    """Stage 2: weights and activations at their target bits."""
    return Round(w_bits, a_bits, epochs, name=bits_token(w_bits, a_bits))


def two_stage_rounds(
    w_bits: int, a_bits: int, epochs_w: int, epochs_a: int, a_mode: str = "clip"
) -> list[Round]:
    return [weights_round(w_bits, epochs_w, a_mode), activations_round(w_bits, a_bits, epochs_a)]


class Weights:
    """Stage method of `quantize-weights` (TS stage 1)."""

    name = "ts"

    def recipe(self, ctx: Context) -> Recipe:
        p = ctx.cfg.params
        return Recipe(self.name, [weights_round(p.w_bits, p.epochs, p.a_mode)])


class Activations:
    """Stage method of `quantize-activations` (TS stage 2, from stage 1's network)."""

    name = "ts"

    def recipe(self, ctx: Context) -> Recipe:
        p = ctx.cfg.params
        return Recipe(self.name, [activations_round(p.w_bits, p.a_bits, p.epochs)])


TS_WEIGHTS, TS_ACTIVATIONS = Weights(), Activations()
