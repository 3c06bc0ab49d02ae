"""A training round: one precision setting trained for some epochs.

Multi-round methods (two-stage, bit decay) are lists of rounds; each round starts from
the parameters the previous one ended with. Precision changes only through `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lowbit.quant.convert import iter_quantizers, set_bits


@dataclass(frozen=True)
class Round:
    w_bits: int
    a_bits: int  # 32 = clipped to [0, 1] but not rounded
    epochs: int
    a_enabled: bool = True  # False: activation quantizers off (plain ReLU inputs)
    name: str = ""
    w_enabled: bool = True  # False: weight quantizers off (float weights: the clipped FP net)

    def apply(self, model: nn.Module) -> None:
        """Set every quantizer of `model` to this round's precision."""
        set_bits(model, w_bits=self.w_bits, a_bits=self.a_bits)
        for _, q in iter_quantizers(model, "weight"):
            q.enabled = self.w_enabled
        for _, q in iter_quantizers(model, "activation"):
            q.enabled = self.a_enabled
