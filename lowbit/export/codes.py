"""From lowbit's quantizer modules to integer codes and their scales.

Weight codes are read off the model's own eval-mode quantizer output W_q, so they are
exactly what the fake-quant network multiplies: DoReFa W_q = (2q - n) / n gives
w_int = W_q * n (odd integers in [-n, n], n = 2^kw - 1); LSQ W_q = q * s gives
w_int = W_q / s (integers in [-2^(kw-1), 2^(kw-1) - 1]). Both are checked to sit on
their grid, so a quantizer that does not produce integer levels cannot slip through.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lowbit.export.program import ActQuant, ExportError
from lowbit.quant.functional import MAX_BITS
from lowbit.quant.quantizers import (
    ClipActivation,
    DoReFaWeight,
    LSQActivation,
    LSQWeight,
    PACTActivation,
)

# Relative distance from the integer grid tolerated in W_q * n or W_q / s: float32
# rounding of the quantizer's own arithmetic is ~1e-7; a real off-grid value is >= 1e-2.
GRID_TOL = 1e-4


def quantizer_problem(q: nn.Module | None, role: str) -> str:
    """Why `q` does not produce integer codes ("" if it does)."""
    if q is None:
        return f"{role} quantizer missing"
    supported = (DoReFaWeight, LSQWeight) if role == "weight" else _ACT_TYPES
    if type(q) not in supported:
        return f"{role} quantizer missing ({type(q).__name__} is not a lowbit quantizer)"
    if not q.enabled:
        return f"{role} quantizer disabled"
    if q.bits >= MAX_BITS:
        return f"{role} quantizer at {q.bits} bits (no rounding)"
    if isinstance(q, PACTActivation) and not float(q.alpha.detach()) > 0:
        return f"PACT clip level alpha = {float(q.alpha.detach()):g} is not positive"
    if isinstance(q, LSQActivation | LSQWeight) and not float(q.step.detach()) > 0:
        return f"LSQ step = {float(q.step.detach()):g} is not positive"
    return ""


_ACT_TYPES = (ClipActivation, PACTActivation, LSQActivation)


def act_spec(q: nn.Module) -> ActQuant:
    """The ActQuant of an enabled, rounding activation quantizer."""
    if isinstance(q, PACTActivation):
        return ActQuant("pact", q.bits, float(q.alpha.detach()))
    if isinstance(q, LSQActivation):
        return ActQuant("lsq", q.bits, float(q.step.detach()))
    if isinstance(q, ClipActivation):
        return ActQuant("clip", q.bits, 1.0)
    raise ExportError(f"unsupported activation quantizer {type(q).__name__}")


def weight_codes(q: nn.Module, weight: Tensor, name: str) -> tuple[np.ndarray, str, float]:
    """(w_int int32 shaped like `weight`, kind, w_scale) of an enabled weight quantizer."""
    with torch.no_grad():
        wq = q(weight).detach().to(torch.float64).cpu().numpy()
    bits = q.bits
    if isinstance(q, DoReFaWeight):
        kind, w_scale = "dorefa", 1.0 / (2**bits - 1)
        lo, hi = -(2**bits - 1), 2**bits - 1
    elif isinstance(q, LSQWeight):
        kind, w_scale = "lsq", float(q.step.detach())
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        raise ExportError(f"layer {name}: unsupported weight quantizer {type(q).__name__}")
    units = wq / w_scale
    w_int = np.rint(units)
    if np.abs(units - w_int).max(initial=0.0) > GRID_TOL * max(1.0, np.abs(units).max()):
        raise ExportError(f"layer {name}: quantized weights are not on the {bits}-bit grid")
    if w_int.min() < lo or w_int.max() > hi:
        raise ExportError(f"layer {name}: weight codes outside [{lo}, {hi}]")
    if kind == "dorefa" and np.any(w_int % 2 == 0):
        raise ExportError(f"layer {name}: DoReFa weight levels must be odd multiples of 1/n")
    return w_int.astype(np.int32), kind, w_scale


def stored_codes(w_int: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Unsigned k-bit codes for packing: DoReFa q = (w_int + n) / 2; LSQ w_int + 2^(k-1)."""
    if kind == "dorefa":
        return (w_int + (2**bits - 1)) // 2
    return w_int + 2 ** (bits - 1)


def from_stored(codes: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """w_int from the stored unsigned codes (the inverse of stored_codes)."""
    if kind == "dorefa":
        return 2 * codes - (2**bits - 1)
    return codes - 2 ** (bits - 1)


def fold_bn(
    unit: float, bias: Tensor | None, bn: nn.Module | None, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) float64 (C_out,): y = acc * scale + shift reproduces
    BN(unit * acc + bias) in eval mode; `unit` is act.scale * w_scale. Kept in float64
    so that the exact check (compare.exact_model) meets no rounding of its own."""
    b = np.zeros(channels) if bias is None else bias.detach().double().cpu().numpy()
    if bn is None:
        return np.full(channels, unit, np.float64), b
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
        raise ExportError(f"cannot fold {type(bn).__name__}: BatchNorm2d with running stats only")
    var = bn.running_var.detach().double().cpu().numpy()
    mean = bn.running_mean.detach().double().cpu().numpy()
    gamma = np.ones(channels) if bn.weight is None else bn.weight.detach().double().cpu().numpy()
    beta = np.zeros(channels) if bn.bias is None else bn.bias.detach().double().cpu().numpy()
    inv = gamma / np.sqrt(var + bn.eps)
    return unit * inv, beta + (b - mean) * inv
