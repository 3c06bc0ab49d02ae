"""Which bit-widths a training precision can hold exactly (paper §3.1 levels).

The quantizers compute in float32 (functional.py), but under mixed precision their
output is cast to float16 / bfloat16: the activation quantizer's result is cast back
to its input's dtype, and autocast casts the float32 quantized weight to the conv's
dtype. A b-bit quantizer is only b-bit if that cast keeps its levels apart. Its levels,
computed in float32 exactly as the quantizer computes them:

    DoReFa activations   k / (2^b - 1),        k = 0 .. 2^b - 1        (in [0, 1])
    DoReFa weights       2 k / (2^b - 1) - 1                           (in [-1, 1])
    PACT / LSQ           k c: c = alpha / (2^b - 1) (PACT) or the step s (LSQ);
                         k = 0 .. 2^b - 1, or -2^(b-1) .. 2^(b-1) - 1 for LSQ weights

The levels *hold* when the cast levels are all distinct and each still names its own
k (the cast value mapped back to k's scale rounds to k), so a later re-quantization
finds the same integer. `max_exact_bits` finds the largest b for which this holds by
checking every level. The learned c is unknown in advance, so it is checked at 256
values in [1, 2) (a power-of-two factor moves every level exactly, away from float16's
subnormals), and the limit holds for all of them. b = 32, "no rounding", always passes.

What this finds for torch's float16 (11 significant bits) and bfloat16 (8), as
(activations, weights): DoReFa (11, 12) and (8, 9); PACT (10, 12) and (7, 9); LSQ
(10, 11) and (7, 8). Past the limit adjacent levels collide after the cast. float32
is the quantizers' own arithmetic, where nothing is cast back: every bit-width that
check_bits accepts passes.

Past the limit the levels can still be computed exactly in float32 (the quantizers do),
but autocast would cast them to the half type at every conv. So a network whose
quantizers round past what the precision holds (the 16-bit first round of the paper
pipelines' bit decay, 16 -> 8 -> 4 -> 2) trains that round in float32: the engine asks
`held_precision` per network and round. The other rounds keep the mixed precision.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from lowbit.errors import ConfigError
from lowbit.quant.functional import MAX_BITS, MIN_BITS, check_bits
from lowbit.quant.quantizers import (
    ClipActivation,
    DoReFaWeight,
    LSQActivation,
    LSQWeight,
    PACTActivation,
    Quantizer,
)

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
ROLES = ("weight", "activation")
QUANTIZERS = ("dorefa", "pact", "lsq")
_SEARCH_LIMIT = 24  # float32 levels are exact up to 2^24; no half type gets near
_SCALES = 1 + torch.arange(256, dtype=torch.float32) / 256  # learned c, (256,) in [1, 2)


def quantizer_levels(bits: int, role: str) -> Tensor:
    """The 2^bits DoReFa levels in float32, as the quantizers compute them, ascending."""
    n = float(2**bits - 1)
    unit = torch.arange(2**bits, dtype=torch.float32) / n  # q_k: round(.) / n
    return unit if role == "activation" else 2 * unit - 1


def _integers(bits: int, signed: bool) -> Tensor:
    """The integers k of a scaled quantizer: (2^bits,) float32, ascending."""
    low = -(2 ** (bits - 1)) if signed else 0
    return torch.arange(low, low + 2**bits, dtype=torch.float32)


def _dorefa_holds(bits: int, dtype: torch.dtype, role: str) -> bool:
    cast = quantizer_levels(bits, role).to(dtype).double()
    unit = cast if role == "activation" else (cast + 1) / 2
    k = torch.round(unit * (2**bits - 1))
    distinct = bool((cast[1:] > cast[:-1]).all())
    return distinct and torch.equal(k, torch.arange(2**bits, dtype=torch.float64))


def _scaled_holds(bits: int, dtype: torch.dtype, signed: bool) -> bool:
    k = _integers(bits, signed)
    cast = (_SCALES[:, None] * k).to(dtype).double()  # (scales, levels): k c, then the cast
    k_back = torch.round(cast / _SCALES.double()[:, None])
    distinct = bool((cast[:, 1:] > cast[:, :-1]).all())
    return distinct and torch.equal(k_back, k.double().expand_as(k_back))


def levels_hold(bits: int, dtype: torch.dtype, role: str, quantizer: str = "dorefa") -> bool:
    """Whether the `bits`-bit levels of `quantizer`'s `role` stay distinct and
    identifiable when cast to `dtype`."""
    if quantizer == "dorefa" or (quantizer == "pact" and role == "weight"):
        return _dorefa_holds(bits, dtype, role)  # PACT's weights are DoReFa's
    return _scaled_holds(bits, dtype, signed=role == "weight")


def _check_names(precision: str, role: str, quantizer: str) -> None:
    for what, value, choices in (
        ("precision", precision, PRECISIONS),
        ("role", role, ROLES),
        ("quantizer", quantizer, QUANTIZERS),
    ):
        if value not in choices:
            raise ConfigError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


@functools.cache
def max_exact_bits(precision: str, role: str, quantizer: str = "dorefa") -> int:
    """The largest bit-width below 32 whose levels hold in `precision`."""
    _check_names(precision, role, quantizer)
    dtype = PRECISIONS[precision]
    if dtype == torch.float32:
        return MAX_BITS - 1  # the quantizers' own dtype: nothing is cast back
    bits = MIN_BITS - 1
    # the levels get denser with every bit, so the first failure ends the search
    while bits < _SEARCH_LIMIT and levels_hold(bits + 1, dtype, role, quantizer):
        bits += 1
    return bits


def check_precision(bits: int, precision: str, role: str, quantizer: str = "dorefa") -> None:
    """Raise ConfigError (one line, with the fix) if `precision` cannot hold `bits`-bit
    `role` levels of `quantizer`; 32 bits (no rounding) always passes."""
    bits = check_bits(bits, f"{role} bits")
    limit = max_exact_bits(precision, role, quantizer)
    if bits >= MAX_BITS or bits <= limit:
        return
    raise ConfigError(
        f"{quantizer} {role} bits {bits} cannot be held in {precision}: their {2**bits} "
        f"levels collide when cast to {precision}; use at most {limit} {role} bits "
        f"(or 32, no rounding) with {precision}, or precision fp32"
    )


# the level formula each quantizer class computes (its family's, see levels_hold)
_FAMILY: dict[type[Quantizer], str] = {
    DoReFaWeight: "dorefa", ClipActivation: "dorefa", PACTActivation: "pact",
    LSQWeight: "lsq", LSQActivation: "lsq",
}  # fmt: skip


def _limit(q: Quantizer, precision: str) -> int:
    """The largest bit-width `q`'s levels keep in `precision`; a quantizer class of
    unknown levels gets the strictest limit of its role."""
    family = next((_FAMILY[c] for c in type(q).__mro__ if c in _FAMILY), None)
    if family is None:
        return min(max_exact_bits(precision, q.role, f) for f in QUANTIZERS)
    return max_exact_bits(precision, q.role, family)


def held_precision(model: nn.Module, precision: str) -> str:
    """`precision`, or "fp32" if some enabled quantizer of `model` rounds to more levels
    than `precision` can hold (see the module docstring): the precision its steps run in."""
    if PRECISIONS.get(precision) == torch.float32:
        return precision
    for q in model.modules():
        if isinstance(q, Quantizer) and q.enabled and _limit(q, precision) < q.bits < MAX_BITS:
            return "fp32"
    return precision
