"""The paper's quantizers as functions (Zhuang et al. 2022, §3.1; DoReFa-Net).

k-bit rounding of z in [0, 1]:   q_k(z) = round((2^k - 1) z) / (2^k - 1)
Backward: straight-through estimator on the rounding only (d q_k / d z := 1).

`bits == 32` means "no rounding": weights are still tanh-normalised and activations
still clipped, which is distinct from the plain float layer.

`quantize_weight` and `quantize_activation` run fused kernels where they can
(float CPU tensors, see fused.py and _kernels.py); `quantize_weight_reference` and
`quantize_activation_reference` are the formulas in plain autograd ops, which the fused
paths match bit for bit in the forward (and in the gradient, up to the last bit of the
activation STE; see fused.py).

Mixed precision: half and bfloat16 inputs are quantized in float32 and the result is
cast back to the input's dtype, on every path. In float16, 1.0 * (2^16 - 1) overflows
to inf, and neither float16 (11 significant bits) nor bfloat16 (8) can carry the
products (2^k - 1) z and their rounding for large k. The gradient is the STE / clip
gradient of the formula, returned in the input's dtype. Which bit-widths survive the
cast back is `lowbit.quant.precision`'s concern.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lowbit.identity import MAX_BITS, MIN_BITS, check_bits
from lowbit.quant import fused

__all__ = ["MAX_BITS", "MIN_BITS", "check_bits"]  # re-exported: defined torch-free in identity

# dtypes the quantizers never compute in: their inputs are quantized in float32
LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a quantizer computes in for inputs of `dtype`: float32 for half types."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def upcast(x: Tensor) -> Tensor:
    """`x` in its compute dtype (a differentiable cast; `x` itself when no cast is needed)."""
    return x.to(compute_dtype(x.dtype))


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward (the straight-through estimator).

    Written with `setup_context` (and a generated vmap rule) so that torch.func
    transforms (grad, vmap) can run the reference formulas too.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[Tensor], output: Tensor) -> None:
        pass  # the STE needs nothing from the forward

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad


def round_ste(x: Tensor) -> Tensor:
    return _RoundSTE.apply(x)


def quantize_unit(z: Tensor, bits: int) -> Tensor:
    """q_k(z) for z in [0, 1] with the STE on the rounding; identity at 32 bits."""
    if bits >= MAX_BITS:
        return z
    n = float(2**bits - 1)
    return round_ste(z * n) / n


def levels_of(bits: int) -> float:
    """2^k - 1, the number of rounding steps; 0.0 means "no rounding" (32 bits)."""
    return 0.0 if bits >= MAX_BITS else float(2**bits - 1)


def quantize_weight(w: Tensor, bits: int) -> Tensor:
    """DoReFa weight quantizer with tanh normalisation (paper §3.1).

        t = tanh(W); z = t / (2 max|t|) + 1/2 in [0, 1]; W_q = 2 q_k(z) - 1 in [-1, 1]

    One scale per tensor; the max is not detached (as in the authors' code), so its
    gradient reaches the arg-max element. Returns a tensor shaped like `w`. Values and
    gradients equal `quantize_weight_reference` bit for bit.
    """
    bits = check_bits(bits)
    if w.dtype in LOW_PRECISION:  # half weights: quantized in float32, cast back
        return quantize_weight(w.float(), bits).to(w.dtype)
    ext = fused.kernels_for(w)
    if ext is not None:
        return fused.weight_quant(w, levels_of(bits), ext)
    return quantize_weight_reference(w, bits)


def quantize_weight_reference(w: Tensor, bits: int) -> Tensor:
    """The weight quantizer in plain autograd ops: the formula the fused path must match.

    Computed in float32 for half / bfloat16 `w` (cast back at the end)."""
    bits = check_bits(bits)
    t = torch.tanh(upcast(w))
    z = t / (2 * t.abs().max()) + 0.5
    return (2 * quantize_unit(z, bits) - 1).to(w.dtype)


class _ClipRoundSTE(torch.autograd.Function):
    """q_k(clip(x, 0, 1)) in PyTorch ops, saving a 1-byte mask, not a float tensor.

    The path for tensors the C++ kernels do not take (CUDA, float16, tracing).
    Gradient: where(0 <= x <= 1, grad, 0), the clip's gradient of `clip_unit`
    (boundary points included) times the STE's 1 for the rounding, in grad's dtype.
    The mask is `clip(x) == x` (false for NaN, like the reference's compares): 2
    passes, not 3. Half / bfloat16 x is quantized in float32 (the cast up is exact, so
    the mask is x's own) and the levels are cast back to x's dtype; only the 1-byte
    mask is saved, never the float32 copy.
    """

    @staticmethod
    def forward(ctx: object, x: Tensor, levels: float) -> Tensor:
        xc = upcast(x)
        y = xc.clamp(0, 1)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(y == xc)
        if levels > 0:
            y = y.mul_(levels).round_().div_(levels)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad, 0.0), None


def quantize_activation(x: Tensor, bits: int) -> Tensor:
    """Activation quantizer: q_k(clip(x, 0, 1)) (paper §3.1). At 32 bits, clip only."""
    levels = levels_of(check_bits(bits))
    ext = fused.kernels_for(x, fused.ACT_DTYPES)
    if ext is not None:
        return fused.act_quant(x, levels, ext)
    if torch._C._are_functorch_transforms_active():
        return quantize_activation_reference(x, bits)  # torch.func: plain autograd ops
    return _ClipRoundSTE.apply(x, levels)


def clip_unit(x: Tensor) -> Tensor:
    """clip(x, 0, 1) with gradient 1 on the closed interval [0, 1] and 0 outside.

    lowbit's convention for the clip's subgradient at the bounds, stated explicitly
    because torch.clamp's own choice changed between releases (1 at the bounds up to
    torch 2.x; 0 for scalar bounds in torch 2.14). Values equal x.clamp(0, 1) bit for
    bit (NaN stays NaN, with gradient 0).
    """
    inside = (x >= 0) & (x <= 1)
    return torch.where(inside, x, x.detach().clamp(0, 1))


def quantize_activation_reference(x: Tensor, bits: int) -> Tensor:
    """The same quantizer in plain autograd ops: the formula the fused path must match.

    Computed in float32 for half / bfloat16 `x` (cast back at the end)."""
    return quantize_unit(clip_unit(upcast(x)), check_bits(bits)).to(x.dtype)
