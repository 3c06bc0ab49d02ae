"""FP pretraining: the full-precision network every quantized stage starts from."""

from __future__ import annotations

from lowbit.methods.base import Context, Recipe
from lowbit.methods.rounds import Round
from lowbit.quant.functional import MAX_BITS


class FullPrecision:
    """Stage method of `pretrain`: one round of the float network."""

    name = "fp"

    def recipe(self, ctx: Context) -> Recipe:
        # bits 32 with float weights: the plain network has no quantizer to set, the
        # clipped one (common.fp_start: clip) clips its activations without rounding
        epochs = ctx.cfg.params.epochs
        rounds = [Round(MAX_BITS, MAX_BITS, epochs, name="fp", w_enabled=False)]
        return Recipe(self.name, rounds, fp=True)


FULL_PRECISION = FullPrecision()
