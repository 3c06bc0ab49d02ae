"""Quantizers under mixed precision (paper §3.1 levels in float16 / bfloat16 and autocast)
and lowbit.quant.precision's limits on the bit-widths each precision can hold.

float16 on the CPU takes the same plain-op path as CUDA; bfloat16 takes the C++ kernels
("auto") or the plain ops ("torch"), so its tests run on both.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit.errors import ConfigError
from lowbit.models import build_model
from lowbit.quant import QuantConv2d, _kernels, quantize
from lowbit.quant.functional import (
    quantize_activation,
    quantize_activation_reference,
    quantize_weight,
    quantize_weight_reference,
)
from lowbit.quant.precision import check_precision, levels_hold, max_exact_bits, quantizer_levels
from lowbit.quant.quantizers import DoReFaWeight, LSQActivation, LSQWeight, PACTActivation

# (dtype, backend): float16 has no kernel, so "auto" would repeat "torch"
PATHS = [(torch.float16, "torch"), (torch.bfloat16, "torch"), (torch.bfloat16, "auto")]
SCALE = 65536.0  # GradScaler's initial loss scale


def test_fp16_16bit_activation_is_one_not_inf():
    y = quantize_activation(torch.ones(8, dtype=torch.half), 16)
    assert y.dtype == torch.half
    assert torch.isfinite(y).all() and torch.equal(y, torch.ones(8, dtype=torch.half))


@pytest.mark.parametrize("dtype,backend", PATHS)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_levels_are_the_exact_levels_rounded_to_the_dtype(dtype, backend, bits):
    # The grid is made in float32 and cast: torch.linspace(..., dtype=torch.bfloat16)
    # computes in bfloat16 and skips values (518 distinct, e.g. none between 0.5 and
    # 0.5078), which leaves 35 of the 8-bit levels without an input.
    x = torch.linspace(-0.5, 1.5, 20001).to(dtype)
    with _kernels.use_backend(backend):
        y = quantize_activation(x, bits)
    n = 2**bits - 1
    exact = torch.arange(2**bits, dtype=torch.float64) / n  # k / (2^b - 1)
    expected = (torch.arange(2**bits, dtype=torch.float32) / n).to(dtype)  # float32, cast
    levels = torch.unique(y)
    assert y.dtype == dtype and len(levels) == 2**bits
    assert torch.equal(levels, expected)
    # each level is k / n rounded once to the dtype: within half a unit in its last place
    half_ulp = torch.finfo(dtype).eps / 2 * exact
    assert ((levels.double() - exact).abs() <= half_ulp).all()
    # element for element: the float32 quantizer, then the cast
    assert torch.equal(y, quantize_activation(x.float(), bits).to(dtype))


@pytest.mark.parametrize("dtype,backend", PATHS)
@pytest.mark.parametrize("bits", [2, 16, 32])
def test_half_activation_gradient_is_the_clip_gradient_in_the_dtype(dtype, backend, bits):
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(4, 3, 5, 5, generator=g) * 0.8 + 0.4).to(dtype)
    x.view(-1)[:4] = torch.tensor([0.0, 1.0, -0.0, 1.5])
    up = torch.randn(x.shape, generator=g).to(dtype)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with _kernels.use_backend(backend):
        y1 = quantize_activation(x1, bits)
    y2 = quantize_activation_reference(x2, bits)
    assert torch.equal(y1, y2)
    y1.backward(up)
    y2.backward(up)
    assert x1.grad.dtype == dtype
    inside = (x >= 0) & (x <= 1)
    assert torch.equal(x1.grad, torch.where(inside, up, torch.zeros((), dtype=dtype)))
    assert torch.equal(x1.grad, x2.grad)


def scaled_backward(out: torch.Tensor) -> None:
    """GradScaler's backward: a loss with per-element gradient 2^-16, scaled by 65536,
    so 1 per element (fine in float16; a float16 sum over 2^17 elements is inf)."""
    (out.float().sum() / SCALE * SCALE).backward()


def test_pact_half_16bit_forward_and_scaled_alpha_gradient():
    q = PACTActivation(16)
    x = torch.cat([torch.full((2**17,), 2.0), torch.linspace(-0.5, 0.99, 1000)]).half()
    xh = x.clone().requires_grad_(True)
    y = q(xh)
    assert y.dtype == torch.half and torch.isfinite(y).all()
    ref = PACTActivation(16)
    xf = x.float().requires_grad_(True)
    y_ref = ref(xf)
    assert torch.equal(y, y_ref.half())  # the float32 formula, cast back
    scaled_backward(y)
    scaled_backward(y_ref)
    # PACT eq. 3: d a_q / d alpha = 1 where x >= alpha, summed in float32
    assert torch.isfinite(q.alpha.grad) and q.alpha.grad.item() == 2.0**17
    assert torch.equal(q.alpha.grad, ref.alpha.grad)
    assert xh.grad.dtype == torch.half and torch.equal(xh.grad, xf.grad.half())


@pytest.mark.parametrize("cls", [LSQActivation, LSQWeight])
def test_lsq_half_scaled_step_gradient_is_finite_and_float32(cls):
    x = torch.cat([torch.full((2**17,), 40.0), torch.linspace(-3, 3, 999)]).half()
    state = {"step": torch.tensor(1.0), "initialized": torch.tensor(True)}
    q, ref = cls(2), cls(2)
    q.load_state_dict(state)
    ref.load_state_dict(state)
    xh, xf = x.clone().requires_grad_(True), x.float().requires_grad_(True)
    y, y_ref = q(xh), ref(xf)
    assert y.dtype == torch.half and torch.equal(y, y_ref.half())
    scaled_backward(y)
    scaled_backward(y_ref)
    assert torch.isfinite(q.step.grad)
    assert torch.equal(q.step.grad, ref.step.grad)  # the same float32 sums
    assert torch.equal(xh.grad, xf.grad.half())


def test_lsq_half_first_batch_initialises_like_float32():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)).half() * 3
    q, ref = LSQActivation(4).train(), LSQActivation(4).train()
    q(x)
    ref(x.float())
    assert torch.equal(q.step, ref.step)


@pytest.mark.parametrize("bits", [2, 8])
def test_half_weights_are_quantized_in_float32(bits):
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(bits)) * 0.7
    for dtype in (torch.float16, torch.bfloat16):
        wq = quantize_weight(w.to(dtype), bits)
        assert wq.dtype == dtype
        assert torch.equal(wq, quantize_weight(w.to(dtype).float(), bits).to(dtype))
        assert torch.equal(wq, quantize_weight_reference(w.to(dtype), bits))


@pytest.mark.parametrize("quantizer", [DoReFaWeight(2), LSQWeight(2).eval()])
def test_weight_quantizer_under_autocast_stays_float32(quantizer):
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    outside = quantizer(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = quantizer(w)
    assert inside.dtype == torch.float32 and torch.equal(inside, outside)


# --- the fused quantizer + conv under CPU bfloat16 autocast ------------------------


@pytest.fixture(scope="module")
def ext():
    with _kernels.use_backend("auto"):
        module = _kernels.cpu_extension()
    if module is None:
        pytest.skip(f"C++ kernels unavailable here: {_kernels.backend_reason()}")
    return module


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bias,channels_last", [(False, True), (True, False)])
def test_fused_conv_under_bf16_autocast_equals_reference(ext, x_dtype, bias, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1, stride=2, bias=bias)
    q = QuantConv2d.from_float(conv)
    q.w_quant.bits = q.a_quant.bits = 2
    x = (torch.randn(3, 6, 9, 7) * 0.8 + 0.4).to(x_dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xq, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_q = q(xq)
        w_ref = quantize_weight_reference(conv.weight, 2)
        out_r = conv._conv_forward(quantize_activation_reference(xr, 2), w_ref, conv.bias)
    assert type(out_q.grad_fn).__name__ == "_QuantConv2dBackward"
    assert out_q.dtype == torch.bfloat16 and torch.equal(out_q, out_r)
    up = torch.randn(out_q.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    out_q.backward(up)
    grads_q = [p.grad.clone() for p in q.parameters()]
    q.zero_grad()
    out_r.backward(up)
    for gq, p in zip(grads_q, conv.parameters(), strict=True):
        assert gq.dtype == torch.float32 and torch.equal(gq, p.grad)  # bf16 conv grad, cast
    assert xq.grad.dtype == x_dtype and torch.equal(xq.grad == 0, xr.grad == 0)
    # float32 x: the reference's STE is (g / n) n, one float32 rounding away from g
    torch.testing.assert_close(xq.grad, xr.grad, rtol=2.0**-23, atol=0)


def test_resnet_under_bf16_autocast_fused_equals_unfused(ext):
    torch.manual_seed(0)
    model = quantize(build_model("resnet20", num_classes=10), 2, 2).train()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))

    def run(backend: str):
        model.zero_grad(set_to_none=True)
        with _kernels.use_backend(backend):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            nn.functional.cross_entropy(logits.float(), y).backward()
        nodes = _count_fused(logits.grad_fn)
        return logits.detach(), nodes, {n: p.grad.clone() for n, p in model.named_parameters()}

    (l1, n1, g1), (l2, n2, g2) = run("auto"), run("torch")
    clip_inputs = [m for m in model.modules() if isinstance(m, QuantConv2d) and m._fusable_input()]
    assert n1 == len(clip_inputs) == 10 and n2 == 0  # each block's conv2, layer1.0.conv1
    assert torch.equal(l1, l2)
    for name in g1:
        assert torch.equal(g1[name], g2[name]), name


def _count_fused(fn: object, seen: set | None = None) -> int:
    """_QuantConv2dBackward nodes in the autograd graph below `fn`."""
    seen = set() if seen is None else seen
    if fn is None or fn in seen:
        return 0
    seen.add(fn)
    here = type(fn).__name__ == "_QuantConv2dBackward"
    return here + sum(_count_fused(g, seen) for g, _ in fn.next_functions)


# --- check_precision: the limits found by checking every level -------------------

LIMITS = {  # (precision, quantizer, role): the largest bit-width that holds
    ("fp16", "dorefa", "activation"): 11, ("fp16", "dorefa", "weight"): 12,
    ("bf16", "dorefa", "activation"): 8, ("bf16", "dorefa", "weight"): 9,
    ("fp16", "pact", "activation"): 10, ("fp16", "pact", "weight"): 12,  # DoReFa's weights
    ("bf16", "pact", "activation"): 7, ("bf16", "pact", "weight"): 9,
    # LSQ's weights are signed: only k = -2^(b-1) reaches the top binade
    ("fp16", "lsq", "activation"): 10, ("fp16", "lsq", "weight"): 11,
    ("bf16", "lsq", "activation"): 7, ("bf16", "lsq", "weight"): 8,
}  # fmt: skip
DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("key", list(LIMITS))
def test_limits_are_where_cast_levels_first_collide(key):
    precision, quantizer, role = key
    limit = LIMITS[key]
    assert max_exact_bits(precision, role, quantizer) == limit
    for bits in range(2, limit + 1):
        assert levels_hold(bits, DTYPE[precision], role, quantizer)
    for bits in (limit + 1, limit + 2):
        assert not levels_hold(bits, DTYPE[precision], role, quantizer)
    if quantizer == "dorefa":  # past the limit, the cast merges levels
        merged = quantizer_levels(limit + 1, role).to(DTYPE[precision])
        assert len(torch.unique(merged)) < 2 ** (limit + 1)


def test_levels_checked_are_the_quantizers_own():
    for bits in (2, 8, 11):
        a = quantizer_levels(bits, "activation")
        assert torch.equal(quantize_activation(a, bits), a)  # fixed points of q_k
    # bfloat16 9-bit activations: the real quantizer's outputs collide, as predicted
    x = torch.linspace(0, 1, 20001)
    assert len(torch.unique(quantize_activation(x, 9).bfloat16())) < 2**9
    assert len(torch.unique(quantize_activation(x, 8).bfloat16())) == 2**8
    # PACT with alpha = 1.5 (levels in [0, 1.5]) loses 8-bit levels in bfloat16, not 7-bit
    q = PACTActivation(8, alpha=1.5).eval()
    x = torch.linspace(0, 1.5, 20001)
    assert len(torch.unique(q(x).bfloat16())) < 2**8
    q.bits = 7
    assert len(torch.unique(q(x).bfloat16())) == 2**7


@pytest.mark.parametrize(
    "bits,precision,role,quantizer",
    [(12, "fp16", "activation", "dorefa"), (16, "fp16", "activation", "dorefa"),
     (13, "fp16", "weight", "dorefa"), (9, "bf16", "activation", "dorefa"),
     (16, "bf16", "activation", "dorefa"), (10, "bf16", "weight", "dorefa"),
     (8, "bf16", "activation", "pact"), (9, "bf16", "weight", "lsq")],
)  # fmt: skip
def test_check_precision_rejects_with_one_line_fix(bits, precision, role, quantizer):
    with pytest.raises(ConfigError) as e:
        check_precision(bits, precision, role, quantizer)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"at most {LIMITS[precision, quantizer, role]} {role} bits" in msg and "fp32" in msg


def test_check_precision_accepts_what_holds():
    for (precision, quantizer, role), limit in LIMITS.items():
        for bits in (2, limit, 32):
            check_precision(bits, precision, role, quantizer)
    for bits in range(2, 33):  # float32: the quantizers' own arithmetic, no cast back
        for role in ("activation", "weight"):
            check_precision(bits, "fp32", role)
            check_precision(bits, "fp32", role, "lsq")


@pytest.mark.parametrize(
    "args",
    [(8, "fp64", "activation"), (8, "fp16", "bias"), (1, "fp16", "weight"),
     (4, "fp16", "weight", "xnor")],
)  # fmt: skip
def test_check_precision_rejects_bad_names_and_bits(args):
    with pytest.raises(ConfigError):
        check_precision(*args)
