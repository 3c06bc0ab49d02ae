"""The paper's quantizers as functions (Zhuang et al. 2022, §3.1; DoReFa-Net).

k-bit rounding of z in [0, 1]:   q_k(z) = round((2^k - 1) z) / (2^k - 1)
Backward: straight-through estimator on the rounding only (d q_k / d z := 1).

`bits == 32` means "no rounding": weights are still tanh-normalised and activations
still clipped, which is distinct from the plain float layer.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from lowbit.errors import ConfigError

MIN_BITS = 2
MAX_BITS = 32


def check_bits(bits: object, what: str = "bits") -> int:
    """Validate a bit-width: an integer in [2, 32]; returns it as int.

    1 bit is rejected: the tanh/clip quantizers degenerate there (binary nets use a
    sign quantizer with a learned scale, which is not the paper's method).
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise ConfigError(f"{what} must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ConfigError(f"{what} must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return int(bits)


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return torch.round(x)

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


def quantize_weight(w: Tensor, bits: int) -> Tensor:
    """DoReFa weight quantizer with tanh normalisation (paper §3.1).

        t = tanh(W); z = t / (2 max|t|) + 1/2 in [0, 1]; W_q = 2 q_k(z) - 1 in [-1, 1]

    One scale per tensor; the max is not detached (as in the authors' code), so its
    gradient reaches the arg-max element. Returns a tensor shaped like `w`.
    """
    bits = check_bits(bits)
    t = torch.tanh(w)
    z = t / (2 * t.abs().max()) + 0.5
    return 2 * quantize_unit(z, bits) - 1


class _ClipRoundSTE(torch.autograd.Function):
    """q_k(clip(x, 0, 1)) in one pass; saves a 1-byte mask, not a float tensor.

    Gradient: grad * 1[0 <= x <= 1], exactly torch.clamp's gradient (its boundary
    points included) times the STE's 1 for the rounding.
    """

    @staticmethod
    def forward(ctx: object, x: Tensor, levels: float) -> Tensor:
        mask = (x >= 0) & (x <= 1)
        ctx.save_for_backward(mask)
        y = x.clamp(0, 1)
        if levels > 0:
            y = y.mul_(levels).round_().div_(levels)
        return y

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def quantize_activation(x: Tensor, bits: int) -> Tensor:
    """Activation quantizer: q_k(clip(x, 0, 1)) (paper §3.1). At 32 bits, clip only."""
    bits = check_bits(bits)
    levels = 0.0 if bits >= MAX_BITS else float(2**bits - 1)
    return _ClipRoundSTE.apply(x, levels)


def quantize_activation_reference(x: Tensor, bits: int) -> Tensor:
    """The same quantizer in plain autograd ops: the formula the fused path must match."""
    return quantize_unit(x.clamp(0, 1), check_bits(bits))
