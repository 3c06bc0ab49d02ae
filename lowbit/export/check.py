"""Per-layer integer audit of a quantized model: bits, code ranges, accumulator bounds.

The paper's layer policy (§3.1): the first conv and the last fc stay full precision;
every other conv and fc must be integer-only, i.e. both its weight quantizer and the
quantizer of its input (its own `a_quant`, or the source block's `out_quant`) are
enabled and round to fewer than 32 bits, and its int32 accumulator cannot overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lowbit.export.codes import act_spec, quantizer_problem, weight_codes
from lowbit.export.program import ExportError
from lowbit.quant.convert import default_keep_fp
from lowbit.quant.layers import QuantConv2d, QuantizedInput, QuantLinear

INT32_MAX = 2**31 - 1


@dataclass
class LayerCheck:
    """One conv / fc layer. Ranges are integer codes: weights w_int (signed),
    activations m (unsigned); acc_bound = fan_in * max m * max |w_int|."""

    name: str
    policy_fp: bool  # the policy keeps it full precision (first conv, last fc)
    integer: bool  # its multiply-accumulates run on integer codes
    w_bits: int | None = None
    a_bits: int | None = None
    w_range: tuple[int, int] | None = None
    a_range: tuple[int, int] | None = None
    acc_bound: int | None = None
    source: str = ""  # the block whose out_quant codes it reads ("" = its own a_quant)
    problem: str = ""  # why it is not integer-only although the policy says it should be

    @property
    def acc_bits(self) -> int | None:
        """Bits of a signed accumulator that holds acc_bound."""
        return None if self.acc_bound is None else self.acc_bound.bit_length() + 1


def _input_quantizer(model: nn.Module, layer: QuantConv2d | QuantLinear) -> tuple[object, str]:
    """(the quantizer that rounds `layer`'s input or None, its source block name)."""
    aq = getattr(layer, "a_quant", None)
    if isinstance(aq, QuantizedInput):
        try:
            return getattr(model.get_submodule(aq.source), "out_quant", None), aq.source
        except AttributeError:
            return None, aq.source
    return aq, ""


def _check_quant(model: nn.Module, name: str, layer: QuantConv2d | QuantLinear) -> LayerCheck:
    aq, source = _input_quantizer(model, layer)
    row = LayerCheck(name, policy_fp=False, integer=False, source=source)
    row.w_bits = getattr(layer.w_quant, "bits", None)
    row.a_bits = getattr(aq, "bits", None)
    w_problem = quantizer_problem(layer.w_quant, "weight")
    a_problem = quantizer_problem(aq, "input")
    if a_problem and source:
        a_problem += f" (out_quant of block {source})"
    if not a_problem:
        row.a_range = (0, act_spec(aq).levels)
    if not w_problem:
        w_int = weight_codes(layer.w_quant, layer.weight, name)[0]
        row.w_range = (int(w_int.min()), int(w_int.max()))
        if row.a_range is not None:
            fan_in = w_int[0].size
            row.acc_bound = fan_in * row.a_range[1] * int(abs(w_int).max())
    row.problem = w_problem or a_problem
    if not row.problem and row.acc_bound is not None and row.acc_bound > INT32_MAX:
        row.problem = f"accumulator bound {row.acc_bound} overflows int32"
    row.integer = not row.problem
    return row


def check_layers(model: nn.Module) -> list[LayerCheck]:
    """A LayerCheck for every conv and fc of `model`, in registration order."""
    keep = set(default_keep_fp(model))
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, QuantConv2d | QuantLinear):
            row = _check_quant(model, name, m)
            row.policy_fp = name in keep
            rows.append(row)
        elif isinstance(m, nn.Conv2d | nn.Linear):
            problem = "" if name in keep else f"not quantized ({type(m).__name__})"
            rows.append(LayerCheck(name, policy_fp=name in keep, integer=False, problem=problem))
    return rows


def require_integer(rows: list[LayerCheck]) -> None:
    """One clear line naming the first layer that breaks the policy; also refuses a
    network with no quantized layer (a full-precision run)."""
    if not any(r.integer or r.w_bits is not None for r in rows):
        raise ExportError("the network is full precision: it has no quantized layers to export")
    bad = [r for r in rows if r.problem and not r.policy_fp]
    if bad:
        more = f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""
        raise ExportError(f"layer {bad[0].name} is not integer-only: {bad[0].problem}{more}")


def _span(r: tuple[int, int] | None) -> str:
    return "-" if r is None else f"[{r[0]}, {r[1]}]"


def format_check(rows: list[LayerCheck]) -> str:
    """A fixed-width table, one line per layer."""
    head = ("layer", "w_bits", "a_bits", "w codes", "a codes", "input", "acc bound", "integer")
    lines = [head]
    for r in rows:
        status = "yes" if r.integer else ("float (policy)" if r.policy_fp else "NO: " + r.problem)
        acc = "-" if r.acc_bound is None else f"{r.acc_bound} ({r.acc_bits} bits)"
        source = ("block " + r.source) if r.source else ("own" if r.w_bits is not None else "-")
        lines.append(
            (
                r.name,
                "-" if r.w_bits is None else str(r.w_bits),
                "-" if r.a_bits is None else str(r.a_bits),
                _span(r.w_range),
                _span(r.a_range),
                source,
                acc,
                status,
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in lines
    )
