"""The integer reference inference of a Program, in PyTorch integer ops on the CPU.

Every quantized conv multiplies int32 activation codes m in [0, 2^ka - 1] by int32
weight codes w_int with int32 accumulation (torch's integer conv2d, which wraps on
overflow like the hardware; check.py proves the accumulator bound fits), then applies
one float rescale per output channel (BN folded): y = acc * scale + shift. Only the
stem conv, the fc, ReLU, the residual additions and the average pool run in float.

Codes from a block's out_quant travel to the next block as int32 tensors; an identity
shortcut adds their value m * scale in float, as the fake-quant network does.

The float parts run in float32 (as a runtime would) or float64 (the exact check of
compare.py, where no value lands on a rounding tie by float error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from lowbit.export.program import ActQuant, Block, ExportError, IntConv, Program


@dataclass
class Act:
    """An activation between layers: float values, or int32 codes with their quantizer."""

    value: Tensor | None = None  # float (N, C, H, W)
    codes: Tensor | None = None  # int32 (N, C, H, W), in [0, 2^bits - 1]
    quant: ActQuant | None = None

    def float(self, dtype: torch.dtype) -> Tensor:
        if self.value is not None:
            return self.value
        return self.codes.to(dtype) * self.quant.scale


def to_codes(x: Tensor, q: ActQuant) -> Tensor:
    """float (N, C, H, W) -> int32 codes, with the fake-quant quantizer's own float ops
    (clip: round(clamp(x, 0, 1) n); PACT: round(min(relu(x), alpha) / alpha n);
    LSQ: round(clamp(x / s, 0, n))), so both round the same values the same way."""
    n = q.levels
    if q.kind == "clip":
        y = x.clamp(0, 1) * n
    elif q.kind == "pact":
        y = torch.clamp(x, min=0).clamp(max=q.param) / q.param * n
    elif q.kind == "lsq":
        y = (x / q.param).clamp(0, n)
    else:
        raise ExportError(f"unknown activation quantizer kind {q.kind!r}")
    return torch.round(y).to(torch.int32)


Trace = dict[str, Tensor] | None  # codes by quantizer name, for code-level comparisons


def _channel(v: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.from_numpy(v).to(dtype).view(1, -1, 1, 1)  # (1, C, 1, 1)


def int_conv(layer: IntConv, a: Act, dtype: torch.dtype, trace: Trace = None) -> Tensor:
    """One quantized conv: int32 codes * int32 weights, int32 sums, float rescale."""
    reads_codes = a.codes is not None and (layer.source or a.quant == layer.act)
    m = a.codes if reads_codes else to_codes(a.float(dtype), layer.act)
    if trace is not None and not reads_codes:
        trace[f"{layer.name}.a_quant"] = m
    w = torch.from_numpy(layer.weight).to(torch.int32)
    acc = F.conv2d(m, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    # (N, C_out, H', W') in dtype; exact while |acc| < 2^24 (float32) or 2^53 (float64)
    return acc.to(dtype) * _channel(layer.scale, dtype) + _channel(layer.shift, dtype)


def run_block(block: Block, a: Act, dtype: torch.dtype, trace: Trace = None) -> Act:
    """conv_i (BN folded, ReLU between) + shortcut, ReLU, then the block's out codes."""
    h = a
    for i, layer in enumerate(block.convs):
        y = int_conv(layer, h, dtype, trace)
        if i < len(block.convs) - 1:
            h = Act(value=torch.relu(y))
    ds = block.downsample
    shortcut = int_conv(ds, a, dtype, trace) if ds is not None else a.float(dtype)
    s = torch.relu(y + shortcut)
    if block.out is None:
        return Act(value=s)
    codes = to_codes(s, block.out)
    if trace is not None:
        trace[f"{block.name}.out_quant"] = codes
    return Act(codes=codes, quant=block.out)


def run_stem(program: Program, x: Tensor) -> Tensor:
    """The float first conv, its folded BN and ReLU (and max-pool), in x's dtype."""
    st = program.stem
    y = F.conv2d(x, torch.from_numpy(st.weight).to(x.dtype), None, st.stride, st.padding)
    y = torch.relu(y * _channel(st.scale, x.dtype) + _channel(st.shift, x.dtype))
    if st.maxpool is not None:
        k, s, p = st.maxpool
        y = F.max_pool2d(y, k, s, p)
    return y


@torch.no_grad()
def run_program(
    program: Program, x: Tensor, trace: Trace = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Logits (N, classes) in `dtype` of images x (N, 3, H, W), normalised as the
    model's validation loader yields them. `trace`, if given, receives every
    activation quantizer's int32 codes under the fake-quant model's quantizer name."""
    a = Act(value=run_stem(program, x.to(dtype).contiguous()))
    for block in program.blocks:
        a = run_block(block, a, dtype, trace)
    pooled = a.float(dtype).mean(dim=(2, 3))  # global average pool: (N, C)
    w, b = (torch.from_numpy(v).to(dtype) for v in (program.fc_weight, program.fc_bias))
    return F.linear(pooled, w, b)
