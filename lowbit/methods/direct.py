"""Direct quantization: the baseline the paper improves on.

Weights and activations are quantized to the target bits at once and trained, from the
full-precision checkpoint or from scratch.

Example:
    >>> from lowbit.methods import direct_rounds
    >>> direct_rounds(w_bits=2, a_bits=2, epochs=30)
    [Round(w_bits=2, a_bits=2, epochs=30, a_enabled=True, name='w2a2', w_enabled=True)]
"""

from __future__ import annotations

from lowbit.identity import bits_token
from lowbit.methods.base import Context, Recipe
from lowbit.methods.rounds import Round


def direct_rounds(w_bits: int, a_bits: int, epochs: int) -> list[Round]:
    return [Round(w_bits, a_bits, epochs, name=bits_token(w_bits, a_bits))]


class Direct:
    """The stage method of `direct` (and of `distill`, `stochastic-precision`, whose
    add-ons do the rest): one round at the stage's bits."""

    name = "direct"

    def recipe(self, ctx: Context) -> Recipe:
        p = ctx.cfg.params
        return Recipe(self.name, direct_rounds(p.w_bits, p.a_bits, p.epochs))


DIRECT = Direct()
