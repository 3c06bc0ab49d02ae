"""Step `quant`: lowbit's quantizers and quantized layers on the device against the CPU
reference (the formulas in plain autograd ops, lowbit.quant.functional), and the
levels that survive fp16 / bf16.

Tolerance, stated: on CUDA a division x / s can be computed as x * (1 / s), one rounding
away from the CPU's quotient, so an element exactly between two levels may land on the
other one. Values must be equal except for such one-level flips on at most 0.1 % of the
elements; STE gradients must be equal where the values are (their masks are
comparisons of the same floats); gradients that are sums over a tensor (PACT's alpha,
LSQ's step, DoReFa's max path) within 1e-4 relative. Convolutions differ by float
rounding (cuDNN vs the CPU, TF32 off for the comparison): 1e-4 relative to the output's
scale.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from gpucheck.record import Record

BITS = (2, 4, 8)
MAX_FLIPS = 1e-3  # share of elements that may sit on the neighbouring level


def run(rec: Record, s: dict) -> None:
    dev = torch.device(s["device"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for bits in BITS:
        _functions(rec, dev, bits)
        _modules(rec, dev, bits)
    _layers(rec, dev)
    _half_levels(rec, dev)
    _half_network(rec, dev)
    _suite(rec, s)


def cuda_tests(root: Path) -> list[str]:
    """pytest node ids of the test suite's functions marked to skip without CUDA."""
    ids = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            marks = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
            if isinstance(node, ast.FunctionDef) and any("needs CUDA" in m for m in marks):
                ids.append(f"{path.relative_to(root)}::{node.name}")
    return ids


def _suite(rec: Record, s: dict) -> None:
    """The test suite's own CUDA tests (they skip without CUDA)."""
    ids = cuda_tests(Path(s["root"]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *ids]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=s["root"])
    last = (out.stdout.strip().splitlines() or [""])[-1]
    cuda = s["device"] == "cuda"
    rec.check(
        "the test suite's CUDA tests",
        out.returncode == 0 if cuda else None,
        {"tests": len(ids)},
        last[:200],
    )


def _flips(a: Tensor, b: Tensor, step: float) -> dict:
    """How `a` (device) differs from `b` (reference): elements off by one level, others."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    diff = (a - b).abs()
    one = (diff - step).abs() <= 1e-6 * max(step, 1e-12)
    other = (diff > 0) & ~one
    return {
        "n": a.numel(),
        "one_level": int(one.sum()),
        "other": int(other.sum()),
        "max_abs": float(diff.max()) if diff.numel() else 0.0,
    }


def _pair(t: Tensor, dev: torch.device) -> tuple[Tensor, Tensor]:
    """Two leaf copies of `t`: one on the device, one on the CPU (the reference)."""
    return t.detach().clone().to(dev).requires_grad_(), t.detach().clone().requires_grad_()


def _values_ok(f: dict) -> bool:
    return f["other"] == 0 and f["one_level"] <= MAX_FLIPS * f["n"]


def _functions(rec: Record, dev: torch.device, bits: int) -> None:
    from lowbit.quant.functional import (
        quantize_activation,
        quantize_activation_reference,
        quantize_weight,
        quantize_weight_reference,
    )

    g = torch.Generator().manual_seed(bits)
    n = 2**bits - 1
    w = torch.randn(64, 32, 3, 3, generator=g) * 0.5
    x = torch.randn(32, 16, 8, 8, generator=g) * 0.8 + 0.4
    for name, fn, ref, t, step in (
        ("DoReFa weights", quantize_weight, quantize_weight_reference, w, 2.0 / n),
        ("clip activations", quantize_activation, quantize_activation_reference, x, 1.0 / n),
    ):
        up = torch.randn(t.shape, generator=g)
        a, b = _pair(t, dev)
        ya, yb = fn(a, bits), ref(b, bits)
        ya.backward(up.to(dev))
        yb.backward(up)
        f = _flips(ya, yb, step)
        same = (ya.detach().cpu() == yb.detach()).reshape(-1)
        ga, gb = a.grad.cpu().reshape(-1)[same], b.grad.reshape(-1)[same]
        gerr = float(((ga - gb).abs() / gb.abs().clamp(min=1e-6)).max()) if ga.numel() else 0.0
        ok = _values_ok(f) and gerr <= 1e-4
        rec.check(f"{name} W{bits}: {dev.type} vs CPU reference", ok, {**f, "grad_rel_err": gerr})


def _modules(rec: Record, dev: torch.device, bits: int) -> None:
    """PACT and LSQ: values, input gradients and their learned parameter's gradient."""
    from lowbit.quant.quantizers import LSQActivation, LSQWeight, PACTActivation

    g = torch.Generator().manual_seed(10 + bits)
    x = torch.randn(32, 16, 8, 8, generator=g) * 0.9 + 0.3
    for make, param in (
        (lambda: PACTActivation(bits, alpha=1.3), "alpha"),
        (lambda: LSQActivation(bits), "step"),
        (lambda: LSQWeight(bits), "step"),
    ):
        qa, qb = make(), make()
        if param == "step":  # a learned step, not the first batch's
            state = {"step": torch.tensor(0.11), "initialized": torch.tensor(True)}
            qa.load_state_dict(state)
            qb.load_state_dict(state)
        qa.to(dev)
        up = torch.randn(x.shape, generator=g)
        a, b = _pair(x, dev)
        ya, yb = qa(a), qb(b)
        ya.backward(up.to(dev))
        yb.backward(up)
        level = float(getattr(qb, param).detach()) / (2**bits - 1 if param == "alpha" else 1)
        f = _flips(ya, yb, level)
        pa, pb = getattr(qa, param).grad.cpu(), getattr(qb, param).grad
        perr = float((pa - pb).abs() / pb.abs().clamp(min=1e-6))
        ok = _values_ok(f) and (perr <= 1e-4 or f["one_level"] > 0)
        rec.check(
            f"{type(qb).__name__} W{bits}: {dev.type} vs CPU", ok, {**f, "param_grad_rel_err": perr}
        )


def _layers(rec: Record, dev: torch.device) -> None:
    """QuantConv2d and QuantLinear at W2A2: output and gradients against the CPU."""
    from lowbit.quant import QuantConv2d, QuantLinear

    torch.manual_seed(0)
    for layer, shape in (
        (QuantConv2d.from_float(nn.Conv2d(16, 32, 3, padding=1)), (8, 16, 12, 12)),
        (QuantLinear.from_float(nn.Linear(64, 10)), (8, 64)),
    ):
        layer.w_quant.bits = layer.a_quant.bits = 2
        gpu = _copy(layer).to(dev)
        x = torch.rand(shape) * 1.2 - 0.1
        a, b = _pair(x, dev)
        ya, yb = gpu(a), layer(b)
        up = torch.randn(yb.shape)
        ya.backward(up.to(dev))
        yb.backward(up)
        scale = float(yb.abs().max())
        errs = {"out": float((ya.detach().cpu() - yb.detach()).abs().max()) / scale}
        for name, p in layer.named_parameters():
            ref = p.grad
            errs[name] = float(
                (gpu.get_parameter(name).grad.cpu() - ref).abs().max() / ref.abs().max()
            )
        errs["input"] = float((a.grad.cpu() - b.grad).abs().max() / b.grad.abs().max())
        rec.check(
            f"{type(layer).__name__} W2A2: {dev.type} vs CPU", max(errs.values()) <= 1e-4, errs
        )


def _copy(layer: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(layer)


def _half_levels(rec: Record, dev: torch.device) -> None:
    """fp16 / bf16 activations: exactly 2^b levels, each the fp32 level cast once."""
    from lowbit.quant.functional import quantize_activation

    dtypes = [torch.bfloat16] + ([torch.float16] if dev.type == "cuda" else [])
    grid = torch.linspace(-0.5, 1.5, 20001)  # float32, then cast (see test_precision)
    for dtype in dtypes:
        for bits in BITS:
            y = quantize_activation(grid.to(dtype).to(dev), bits)
            levels = torch.unique(y).cpu()
            exact = (torch.arange(2**bits, dtype=torch.float32) / (2**bits - 1)).to(dtype)
            ok = y.dtype == dtype and bool(torch.isfinite(y).all()) and torch.equal(levels, exact)
            rec.check(
                f"{str(dtype)[6:]} activations W{bits}: exact levels",
                ok,
                {"levels": len(levels), "expected": 2**bits},
            )


def _half_network(rec: Record, dev: torch.device) -> None:
    """W2A2 ResNet-20 under autocast: finite loss and gradients (fp16 scaled, on CUDA)."""
    from lowbit.models import build_model
    from lowbit.quant import quantize

    torch.manual_seed(0)
    model = (
        quantize(build_model("resnet20", 10), 2, 2).to(dev).to(memory_format=torch.channels_last)
    )
    x = torch.randn(32, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device=dev)
    for dtype in [torch.bfloat16] + ([torch.float16] if dev.type == "cuda" else []):
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        (loss * (2.0**16 if dtype == torch.float16 else 1.0)).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        rec.check(
            f"W2A2 ResNet-20 in {str(dtype)[6:]}: finite loss and gradients",
            finite,
            {"loss": float(loss), "grads": len(grads)},
        )
