"""Quantization core: functions (functional) → quantizer modules (quantizers) →
layers that are nn.Conv2d / nn.Linear (layers) → model transform (convert)."""

from lowbit.quant.convert import (
    iter_quant_layers,
    iter_quantizers,
    load_quant_state,
    quant_state,
    quantization,
    quantize,
    set_bits,
)
from lowbit.quant.functional import check_bits, quantize_activation, quantize_weight
from lowbit.quant.layers import QuantConv2d, QuantLinear

__all__ = [
    "QuantConv2d",
    "QuantLinear",
    "check_bits",
    "iter_quant_layers",
    "iter_quantizers",
    "load_quant_state",
    "quant_state",
    "quantization",
    "quantize",
    "quantize_activation",
    "quantize_weight",
    "set_bits",
]
