"""FP pretraining: the full-precision network every quantized stage starts from, trained
from scratch or fine-tuned from published weights (pretrain.start)."""

from __future__ import annotations

from lowbit.methods.base import Context, Recipe
from lowbit.methods.rounds import Round
from lowbit.quant.functional import MAX_BITS


class FullPrecision:
    """Stage method of `pretrain`: one round of the float network, from scratch or from
    `start`: torchvision's published weights or a checkpoint file (lowbit.models.pretrained)."""

    name = "fp"

    def recipe(self, ctx: Context) -> Recipe:
        # bits 32 with float weights: the plain network has no quantizer to set, the
        # clipped one (common.fp_start: clip) clips its activations without rounding
        p = ctx.cfg.params
        rounds = [Round(MAX_BITS, MAX_BITS, p.epochs, name="fp", w_enabled=False)]
        start = None
        if p.start is not None:
            from lowbit.models.pretrained import load_start

            # (state dict, source), checked key for key against the network it will be
            start = load_start(p.start, ctx.float_net(None), ctx.arch["model"], ctx.cfg.base_dir)
        return Recipe(self.name, rounds, fp=True, start=start)


FULL_PRECISION = FullPrecision()
