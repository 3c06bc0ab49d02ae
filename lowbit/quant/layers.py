"""Quantized layers that *are* nn.Conv2d / nn.Linear.

forward reads as a pipeline: quantize the input activation, quantize the weight, run
the parent's operation. Parameter names are the parent's (`weight`, `bias`), so a float
state dict loads unchanged; bias is never quantized (paper §3.1).

On the CPU a QuantConv2d whose input quantizer is the paper's clip quantizer runs
quantizer + conv as one fused autograd node (fused.quant_conv2d) during training: same
values and gradients, but it saves the layer's input instead of a quantized copy, so
it needs no more memory than the float conv (see fused.py).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lowbit.quant import fused
from lowbit.quant.functional import levels_of
from lowbit.quant.quantizers import ClipActivation, DoReFaWeight, Quantizer


class QuantizedInput(nn.Module):
    """A layer's `a_quant` when its input arrives quantized: the output of the block
    `source`, whose own activation quantizer (`<source>.out_quant`) already rounded it.
    An identity, so the layer does not round the same values twice."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"source={self.source!r}"


class _QuantMixin(nn.Module):
    """Shared construction: the parent layer's arguments plus the two quantizers, and the
    adoption of a float layer's parameters. First among the bases, so its __init__ runs
    and hands the rest to nn.Conv2d / nn.Linear."""

    w_quant: Quantizer
    a_quant: Quantizer | QuantizedInput

    def __init__(
        self,
        *args: object,
        w_quant: Quantizer | None = None,
        a_quant: Quantizer | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.w_quant = w_quant if w_quant is not None else DoReFaWeight()
        self.a_quant = a_quant if a_quant is not None else ClipActivation()

    def _adopt(self, layer: nn.Conv2d | nn.Linear) -> None:
        """Hold `layer`'s own parameters (shared, not copied) and its train/eval mode."""
        self.weight = layer.weight
        self.bias = layer.bias
        self.train(layer.training)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """nn.Conv2d with a weight quantizer `w_quant` and an input quantizer `a_quant`."""

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, w_quant: Quantizer | None = None, a_quant: Quantizer | None = None
    ) -> QuantConv2d:
        """A QuantConv2d sharing `conv`'s hyper-parameters and holding its parameters."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            w_quant=w_quant,
            a_quant=a_quant,
        )
        q._adopt(conv)
        return q

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C_in, H, W) -> (N, C_out, H', W')
        ext = fused.conv_kernels(x, self.weight, self.bias) if self._fusable_input() else None
        if ext is not None:  # the same pipeline as one autograd node (see fused.py)
            geometry = (self.stride, self.padding, self.dilation, self.groups)
            w = self.w_quant(self.weight)
            return fused.quant_conv2d(x, w, self.bias, levels_of(self.a_quant.bits), geometry, ext)
        return self._conv_forward(self.a_quant(x), self.w_quant(self.weight), self.bias)

    def _fusable_input(self) -> bool:
        # Exactly the paper's clip quantizer (a subclass may change `quantize`), zero
        # padding given as numbers (the fused node calls the conv kernel directly).
        return (
            type(self.a_quant) is ClipActivation
            and self.a_quant.enabled
            and self.a_quant.gate is None
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )


class QuantLinear(_QuantMixin, nn.Linear):
    """nn.Linear with a weight quantizer `w_quant` and an input quantizer `a_quant`."""

    @classmethod
    def from_float(
        cls, fc: nn.Linear, w_quant: Quantizer | None = None, a_quant: Quantizer | None = None
    ) -> QuantLinear:
        q = cls(
            fc.in_features,
            fc.out_features,
            bias=fc.bias is not None,
            device=fc.weight.device,
            dtype=fc.weight.dtype,
            w_quant=w_quant,
            a_quant=a_quant,
        )
        q._adopt(fc)
        return q

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, in_features) -> (N, out_features)
        return F.linear(self.a_quant(x), self.w_quant(self.weight), self.bias)


QUANT_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: QuantConv2d,
    nn.Linear: QuantLinear,
}
