"""Quantizer modules: one per tensor they quantize, each with `bits` and `enabled`.

- DoReFa (the paper, §3.1): tanh-normalised weights, clip-[0, 1] activations.
- PACT (Choi et al. 2018) [lowbit, beyond the paper]: activations clipped at a learned
  alpha; weights as DoReFa.
- LSQ (Esser et al. 2020) [lowbit, beyond the paper]: learned step size for weights
  (signed) and activations (unsigned).

A disabled quantizer is an exact identity, so a layer with both quantizers disabled is
bit-identical to its float parent. Precision changes only through `bits` and `enabled`
(set by `lowbit.quant.convert.set_bits` and the methods), never inside `forward`.

Half / bfloat16 inputs (autocast) are quantized in float32 and cast back, as in
functional.py: the levels stay exact, and the learned alpha / step get their gradients
summed in float32 (in float16 a scaled loss overflows such sums to inf).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch import distributed as dist

from lowbit.distributed import world_size
from lowbit.errors import ConfigError
from lowbit.quant import functional as F
from lowbit.quant.functional import MAX_BITS, check_bits, compute_dtype, round_ste, upcast

QUANTIZERS = ("dorefa", "pact", "lsq")


class Quantizer(nn.Module):
    """Base class: `forward(x)` is `quantize(x)` when enabled, else `x` itself.

    `gate` (None, or a 0-dim bool tensor on the input's device) switches a quantizer on
    and off per step *by value*: `where(gate, quantize(x), x)`, values and STE gradient
    of whichever side is taken. A compiled model then keeps one graph while stochastic
    precision samples a new sub-network every step (a Python flag would recompile it).
    """

    role: ClassVar[str] = ""  # "weight" or "activation"

    def __init__(self, bits: int = MAX_BITS, enabled: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.enabled = enabled
        self.gate: Tensor | None = None  # a plain attribute: not saved in state dicts

    @property
    def bits(self) -> int:
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        self._bits = check_bits(value, f"{self.role} bits")

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if self.gate is None:
            return self.quantize(x)
        return torch.where(self.gate, self.quantize(x), x)

    def quantize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"bits={self.bits}, enabled={self.enabled}"


class DoReFaWeight(Quantizer):
    """W_q = 2 q_k(tanh(W) / (2 max|tanh(W)|) + 1/2) - 1, one scale per tensor."""

    role = "weight"

    def quantize(self, x: Tensor) -> Tensor:
        return F.quantize_weight(x, self.bits)


class ClipActivation(Quantizer):
    """a_q = q_k(clip(a, 0, 1)); replaces the ReLU that feeds a quantized layer."""

    role = "activation"

    def quantize(self, x: Tensor) -> Tensor:
        return F.quantize_activation(x, self.bits)


class PACTActivation(Quantizer):
    """a_q = alpha * q_k(clip(a, 0, alpha) / alpha) with a learned clip level alpha.

    alpha starts at 1.0 so that PACT starts as the paper's clip-[0, 1] quantizer. The
    STE covers the whole rounding step (a_q := y in backward, y = clip(a, 0, alpha)), so
    d a_q / d alpha = 1 where a >= alpha and 0 elsewhere: PACT's eq. 3. Weight decay
    on alpha comes from the optimiser.
    """

    role = "activation"

    def __init__(self, bits: int = MAX_BITS, enabled: bool = True, alpha: float = 1.0) -> None:
        super().__init__(bits, enabled)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def quantize(self, x: Tensor) -> Tensor:
        xc = upcast(x)  # float32 for half inputs; the result is cast back below
        y = torch.minimum(xc.clamp(min=0), self.alpha)
        if self.bits < MAX_BITS:
            n = float(2**self.bits - 1)
            alpha = self.alpha.detach()
            q = torch.round(y.detach() / alpha * n) * (alpha / n)
            y = y + (q - y.detach())
        return y.to(x.dtype)


def _grad_scale(x: Tensor, scale: float) -> Tensor:
    """Value of x, gradient multiplied by `scale` (LSQ's step-size gradient scaling)."""
    return (x - x * scale).detach() + x * scale


def _mean_over_ranks(t: Tensor) -> Tensor:
    """`t` averaged over the default process group (in place), or `t` without one."""
    world = world_size()
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world)
    return t


class _LSQ(Quantizer):
    """Learned step size: q = round(clip(x / s, qn, qp)) * s, s initialised from data.

    s starts at 2 mean|x| / sqrt(qp) on the first batch seen in training (LSQ §2.1)
    and its gradient is scaled by 1 / sqrt(numel * qp). Under torch.distributed the
    initial s is the mean over ranks of each rank's value (DDP syncs parameters only
    when it wraps the model, so ranks would otherwise start from different steps):
    every rank must run its first training forward together, as DDP does.

    `_initialized` mirrors the `initialized` buffer as a Python bool, so the forward
    reads no tensor (a bool(tensor) per call would stall a GPU stream). It is set at
    the first initialisation and whenever a state dict is loaded.
    """

    signed: ClassVar[bool] = False

    def __init__(self, bits: int = MAX_BITS, enabled: bool = True) -> None:
        super().__init__(bits, enabled)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False

    def _range(self) -> tuple[float, float]:
        if self.signed:
            return -float(2 ** (self.bits - 1)), float(2 ** (self.bits - 1) - 1)
        return 0.0, float(2**self.bits - 1)

    @torch.no_grad()
    def _init_step(self, x: Tensor, qp: float) -> None:
        mean = x.abs().mean(dtype=compute_dtype(x.dtype))  # 0-dim, float32 for half x
        s = 2 * mean.clamp(min=1e-8) / math.sqrt(qp)
        self.step.copy_(_mean_over_ranks(s))
        self.initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._initialized = bool(self.initialized)  # one read per load, not per forward

    def quantize(self, x: Tensor) -> Tensor:
        if self.bits >= MAX_BITS:
            return x
        qn, qp = self._range()
        if self.training and not self._initialized:
            self._init_step(x, qp)
        s = _grad_scale(self.step, 1.0 / math.sqrt(x.numel() * qp))
        xc = upcast(x)  # float32 for half inputs: exact levels, float32 step gradient
        return (round_ste((xc / s).clamp(qn, qp)) * s).to(x.dtype)


class LSQWeight(_LSQ):
    role = "weight"
    signed = True


class LSQActivation(_LSQ):
    role = "activation"
    signed = False


_TABLE: dict[str, tuple[type[Quantizer], type[Quantizer]]] = {
    "dorefa": (DoReFaWeight, ClipActivation),
    "pact": (DoReFaWeight, PACTActivation),
    "lsq": (LSQWeight, LSQActivation),
}


def make_quantizers(quantizer: str, w_bits: int, a_bits: int) -> tuple[Quantizer, Quantizer]:
    """(weight quantizer, activation quantizer) of the named family."""
    if quantizer not in _TABLE:
        raise ConfigError(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    w_cls, a_cls = _TABLE[quantizer]
    return w_cls(w_bits), a_cls(a_bits)
