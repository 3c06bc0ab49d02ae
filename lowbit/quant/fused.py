"""Fused autograd functions for the paper's quantizers (§3.1) on the CPU kernels.

Three functions, each bitwise equal in the forward to the reference formulas of
functional.py (`quantize_weight_reference`, `quantize_activation_reference`):

- `act_quant`: a_q = q_k(clip(x, 0, 1)) in one pass, saving a 1-byte mask; backward
  where(mask, g, 0) in one pass. The reference's chain rule computes the STE as
  ((g / n) * n), which can differ from g in the last bit (at most one unit in the last
  place: relative 2^-23 ~ 1.2e-7 for float32); we return g itself, the STE's exact
  "d q_k / dz := 1".
- `weight_quant`: the DoReFa weight quantizer in one call forward and one backward,
  with the reference's exact gradient, max path included (bitwise equal, see
  csrc/quant_cpu.cpp).
- `quant_conv2d`: activation quantizer + conv2d as one node that saves the *input*
  x (N, C_in, H, W) instead of the quantized copy: x is the output of the ReLU in
  front, which autograd keeps anyway, so the quantized layer needs no more saved
  memory than the float one (the separate path keeps 5 more bytes per input
  element: the float copy the conv saves plus the mask). The backward recomputes the
  quantized input (one pass) and applies the mask from x in place on the conv's
  input gradient (one pass); conv gradients come from the same ATen
  convolution_backward autograd calls, so values and gradients equal `act_quant`
  followed by the conv.

Used only for dense CPU tensors outside torch.compile tracing (`kernels_for`):
float32/float64, and bfloat16 for the activation quantizer, which the kernels quantize
in float32 and round back to bfloat16 (bitwise equal to the reference's float32
formula followed by the cast). Everything else takes the PyTorch path in functional.py.

Under CPU bfloat16 autocast, `quant_conv2d` casts the quantized input, the weight and
the bias to bfloat16 exactly as autocast's conv2d does, and its backward calls the same
bfloat16 convolution_backward, so it equals the activation quantizer followed by the
conv under autocast.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from lowbit.quant import _kernels

_FLOAT_TYPES = (torch.float32, torch.float64)
ACT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)  # the activation kernels'
# (stride, padding, dilation, groups) of a conv2d
ConvGeometry = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]


def kernels_for(t: Tensor, dtypes: tuple[torch.dtype, ...] = _FLOAT_TYPES) -> ModuleType | None:
    """The compiled kernels if `t` can use them, else None (the PyTorch path).

    `dtypes`: the kernel's dtypes (the weight kernels take float32/float64 only)."""
    if t.device.type != "cpu" or t.dtype not in dtypes:
        return None
    if type(t) not in (Tensor, torch.nn.Parameter) or torch.compiler.is_compiling():
        return None  # subclasses / tracing: plain ops, which inductor fuses itself
    if torch._C._are_functorch_transforms_active():
        return None  # torch.func (grad, vmap): plain autograd ops
    return _kernels.cpu_extension()


def _dense(t: Tensor) -> Tensor:
    """`t` if its storage is walked densely (contiguous or channels_last), else a copy."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """`t` with the strides of the dense `ref` (same sizes), copied only if they differ."""
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


class _Scratch(threading.local):
    """One reusable flat buffer per thread and dtype for the fused conv's quantized input.

    The quantized copy lives only while one conv forward (or one convolution_backward)
    runs, and autograd runs one node at a time per thread, so a single buffer, grown to
    the largest layer input (N C H W elements; 8 MiB for CIFAR ResNet-20 at batch 128),
    serves every layer. Allocating it afresh per layer made glibc return it to the OS
    and page-fault it back in each time: tens of thousands of faults per training step.
    """

    def __init__(self) -> None:
        self.flat: dict[torch.dtype, Tensor] = {}

    def like(self, x: Tensor) -> Tensor:
        """An uninitialised view shaped and strided like the dense `x`."""
        flat = self.flat.get(x.dtype)
        if flat is None or flat.numel() < x.numel():
            flat = torch.empty(x.numel(), dtype=x.dtype)
            self.flat[x.dtype] = flat
        return flat[: x.numel()].as_strided(x.shape, x.stride())


_SCRATCH = _Scratch()


def release_scratch() -> None:
    """Free this thread's scratch buffers (they are otherwise kept for the next step)."""
    _SCRATCH.flat.clear()


class _ActQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, levels: float, ext: ModuleType) -> Tensor:
        need_grad = bool(ctx.needs_input_grad[0])
        y, mask = ext.act_forward(_dense(x), levels, need_grad)
        if need_grad:
            ctx.save_for_backward(mask)
            ctx.ext = ext
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return ctx.ext.act_backward(_like(grad, mask), mask), None, None


class _WeightQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: Tensor, levels: float, ext: ModuleType) -> Tensor:
        y, t, m = ext.weight_forward(_dense(w), levels)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(t, m)  # tanh(w) like w, max|tanh(w)| 0-dim
            ctx.levels, ctx.ext = levels, ext
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        t, m = ctx.saved_tensors
        # Work in the upstream gradient's layout: the reference's max-path sum runs
        # over a product whose layout follows `grad`, and a sum's rounding depends on
        # its order, so this keeps the arg-max gradient bitwise equal.
        grad = _dense(grad)
        return ctx.ext.weight_backward(grad, _like(t, grad), m, ctx.levels), None, None


def _cast(t: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    """`t` in `dtype` (None: unchanged), as autocast casts a conv's operands."""
    return t if t is None or dtype is None else t.to(dtype)


class _QuantConv2d(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        levels: float,
        geometry: ConvGeometry,
        ext: ModuleType,
    ) -> Tensor:
        x = _dense(x)
        y = ext.act_forward_out(x, levels, _SCRATCH.like(x))  # (N, C_in, H, W), scratch
        stride, padding, dilation, groups = geometry
        cdt = _autocast_dtype()  # None without autocast: every operand keeps its dtype
        ctx.save_for_backward(x, weight)
        ctx.levels, ctx.geometry, ctx.ext, ctx.cdt = levels, geometry, ext, cdt
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        w, b = _cast(weight, cdt), _cast(bias, cdt)
        return F.conv2d(_cast(y, cdt), w, b, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        cdt = ctx.cdt
        y = ctx.ext.act_forward_out(x, ctx.levels, _SCRATCH.like(x))  # recompute
        yc, wc = _cast(y, cdt), _cast(weight, cdt)
        mask = [bool(ctx.needs_input_grad[i]) for i in range(3)]
        gy, gw, gb = torch.ops.aten.convolution_backward(
            grad, yc, wc, ctx.bias_sizes, stride, padding, dilation, False, [0, 0], groups, mask
        )
        del y, yc
        if gy is not None:  # gy is ours: the clip's gradient applied in place
            gy = ctx.ext.act_backward_from_input_(_like(gy.to(x.dtype), x), x)
        # autocast's casts back: the gradients in the dtypes of weight and bias
        return gy, _cast(gw, ctx.dtypes[0]), _cast(gb, ctx.dtypes[1]), None, None, None


def act_quant(x: Tensor, levels: float, ext: ModuleType) -> Tensor:
    """q_k(clip(x, 0, 1)); `levels` = 2^k - 1, or 0 for clip only (32 bits)."""
    return _ActQuant.apply(x, levels, ext)


def weight_quant(w: Tensor, levels: float, ext: ModuleType) -> Tensor:
    """2 q_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1; `levels` as in act_quant."""
    return _WeightQuant.apply(w, levels, ext)


def _autocast_dtype() -> torch.dtype | None:
    """The dtype CPU autocast runs conv2d in, or None when autocast is off."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None


def _dtypes_fusable(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether the fused node reproduces the dtypes of the unfused conv.

    Without autocast all operands share a dtype. Under CPU bfloat16 autocast, float32
    or bfloat16 operands are cast to bfloat16 (float64 is left alone by autocast, so
    a conv on it would fail either way; float16 autocast is not fused)."""
    cdt = _autocast_dtype()
    if cdt is None:
        return weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype)
    ok = (torch.float32, torch.bfloat16)
    operands = (x, weight) if bias is None else (x, weight, bias)
    return cdt == torch.bfloat16 and all(t.dtype in ok for t in operands)


def conv_kernels(x: Tensor, weight: Tensor, bias: Tensor | None) -> ModuleType | None:
    """The kernels if quantizer + conv2d should run as one fused node, else None (then
    the caller quantizes and convolves separately, with equal results)."""
    if x.dim() != 4 or not torch.is_grad_enabled():
        return None  # without autograd nothing is saved, so fusing saves nothing
    if not (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return None
    if not _dtypes_fusable(x, weight, bias):
        return None
    return kernels_for(x, ACT_DTYPES)


def quant_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    levels: float,
    geometry: ConvGeometry,
    ext: ModuleType,
) -> Tensor:
    """conv2d(q_k(clip(x, 0, 1)), weight, bias): x (N, C_in, H, W) -> (N, C_out, H', W')."""
    return _QuantConv2d.apply(x, weight, bias, levels, geometry, ext)
