"""Fused quantizer kernels (lowbit.quant.fused, csrc/quant_cpu.cpp) against the reference
formulas of the paper's §3.1 quantizers.

Forward values must be bitwise equal. Gradients: the weight quantizer's bitwise equal
(the kernel replays the reference's float ops and calls the same ATen reduction and
tanh_backward); the activation quantizer's equal up to the last bit, because the
reference's chain rule computes the STE as (g / n) * n while the fused path returns g.

The first test that needs the C++ kernels builds them (about 30-60 s, once per user and
torch version, cached in ~/.cache/lowbit); pytest's timeout covers it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings

import pytest
import torch
from torch import nn

from lowbit.models import build_model
from lowbit.quant import QuantConv2d, _kernels, quantize
from lowbit.quant.functional import (
    quantize_activation,
    quantize_activation_reference,
    quantize_weight,
    quantize_weight_reference,
)

BITS = [2, 3, 4, 8, 32]
F32_ULP = 2.0**-23  # relative spacing of float32 at 1: the activation STE's difference


@pytest.fixture(scope="module")
def ext():
    with _kernels.use_backend("auto"):
        module = _kernels.cpu_extension()
    if module is None:
        pytest.skip(f"C++ kernels unavailable here: {_kernels.backend_reason()}")
    return module


def edge_activations(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Clip boundaries, their float neighbours, rounding ties, infinities and NaN."""
    one, zero = torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)
    ties = [(k + 0.5) / n for n in (3, 15, 255) for k in range(3)]  # round-half-to-even
    vals = [0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1e-30, -1e-30, float("inf"), float("-inf"), *ties]
    t = torch.tensor(vals, dtype=dtype)
    near = torch.stack(
        [
            torch.nextafter(one, zero),
            torch.nextafter(one, 2 * one),
            torch.nextafter(zero, one),
            torch.nextafter(zero, -one),
        ]
    )
    return torch.cat([t, near, torch.tensor([float("nan")], dtype=dtype)])


def act_input(shape=(4, 8, 6, 5), dtype=torch.float32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 0.8 + 0.4).to(dtype)
    flat = x.view(-1)
    e = edge_activations(dtype)
    flat[: len(e)] = e
    return x


INT_OF = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def finite(x: torch.Tensor) -> torch.Tensor:
    """Edge values without NaN (a conv would spread one NaN over its whole output)."""
    return torch.where(torch.isnan(x), torch.full_like(x, 0.2), x)


def assert_same_values(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bitwise equal (the sign of zero included); NaN exactly where the other has NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b))
    bits_a = a.contiguous().view(INT_OF[a.dtype])
    bits_b = b.contiguous().view(INT_OF[b.dtype])
    assert torch.equal(bits_a[~nan], bits_b[~nan])


def act_grads(x: torch.Tensor, bits: int, upstream: torch.Tensor):
    x1 = x.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = quantize_activation(x1, bits), quantize_activation_reference(x2, bits)
    y1.backward(upstream)
    y2.backward(upstream)
    return y1, y2, x1.grad, x2.grad


def check_activation(x: torch.Tensor, bits: int, upstream: torch.Tensor) -> None:
    y1, y2, g1, g2 = act_grads(x, bits, upstream)
    assert_same_values(y1, y2)
    # clamp's gradient (1 on [0, 1], boundaries included) times the STE's exact 1
    inside = (x >= 0) & (x <= 1)
    assert torch.equal(g1, torch.where(inside, upstream, 0.0))
    torch.testing.assert_close(g1, g2, rtol=F32_ULP, atol=0)
    assert torch.equal(g1 == 0, g2 == 0)


@pytest.mark.parametrize("bits", BITS)
def test_activation_cpp_equals_reference(ext, bits):
    x = act_input(seed=bits)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(99))
    check_activation(x, bits, upstream)
    if bits < 32:
        levels = torch.unique(quantize_activation(torch.linspace(-1, 2, 5001), bits))
        assert len(levels) == min(2**bits, 1668)  # 1668 grid points lie in [0, 1]


@pytest.mark.parametrize("bits", [2, 8])
def test_activation_layouts_channels_last_and_strided(ext, bits):
    base = act_input((4, 6, 10, 8), seed=3)
    up = torch.randn(base.shape, generator=torch.Generator().manual_seed(4))
    cl = base.contiguous(memory_format=torch.channels_last)
    check_activation(cl, bits, up)
    check_activation(cl, bits, up.contiguous(memory_format=torch.channels_last))
    strided = act_input((4, 6, 20, 8), seed=5)[:, :, ::2]  # non-contiguous view
    check_activation(strided, bits, up)
    check_activation(base.transpose(1, 3), bits, up.transpose(1, 3))
    # the fused output keeps a dense input's layout
    assert quantize_activation(cl, bits).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_activation_other_dtypes(ext, dtype):
    x = act_input(dtype=dtype, seed=7)
    up = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
    y1, y2, g1, g2 = act_grads(x, 2, up)
    assert_same_values(y1, y2)
    inside = (x >= 0) & (x <= 1)
    assert torch.equal(g1, torch.where(inside, up, torch.zeros((), dtype=dtype)))
    tol = torch.finfo(dtype).eps
    torch.testing.assert_close(g1, g2, rtol=tol, atol=0)


def test_activation_without_grad_and_large_tensor(ext):
    x = act_input((64, 16, 32, 32), seed=11)  # several parallel chunks
    with torch.no_grad():
        assert_same_values(quantize_activation(x, 2), quantize_activation_reference(x, 2))


def weight_input(shape=(16, 8, 3, 3), seed=0, ties=True) -> torch.Tensor:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.7
    flat = w.view(-1)
    flat[:4] = torch.tensor([0.0, -0.0, 1e-8, -1e-8])
    if ties:  # |w| max reached twice, with both signs: the max gradient is shared
        flat[5], flat[9] = 3.0, -3.0
    return w


def weight_grads(w: torch.Tensor, bits: int, upstream: torch.Tensor):
    w1 = w.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    y1, y2 = quantize_weight(w1, bits), quantize_weight_reference(w2, bits)
    y1.backward(upstream)
    y2.backward(upstream)
    return y1, y2, w1.grad, w2.grad


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("ties", [False, True])
def test_weight_cpp_equals_reference_bitwise(ext, bits, ties):
    w = weight_input(seed=bits, ties=ties)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    y1, y2, g1, g2 = weight_grads(w, bits, up)
    assert_same_values(y1, y2)
    assert torch.equal(g1, g2)
    arg = w.abs().view(-1).argmax()
    assert g1.view(-1)[arg] != 0  # the max is not detached: its gradient reaches arg-max


@pytest.mark.parametrize("make", ["channels_last", "transposed", "single", "float64"])
def test_weight_layouts_and_dtypes(ext, make):
    w = weight_input((8, 6, 3, 3), seed=2)
    if make == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    elif make == "transposed":
        w = w.transpose(0, 1)
    elif make == "single":
        w = torch.tensor([0.3])
    else:
        w = w.double()
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(3), dtype=w.dtype)
    y1, y2, g1, g2 = weight_grads(w, 2, up)
    assert_same_values(y1, y2)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weight_half_precision_uses_reference(ext, dtype):
    w = weight_input(seed=4).to(dtype)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    y1, y2, g1, g2 = weight_grads(w, 4, up)
    assert_same_values(y1, y2)
    assert torch.equal(g1, g2)


def test_weight_all_zero_gives_nan_like_reference(ext):
    w = torch.zeros(3, 4)
    assert_same_values(quantize_weight(w, 2), quantize_weight_reference(w, 2))
    assert torch.isnan(quantize_weight(w, 2)).all()


def conv_pair(seed: int, **kw) -> tuple[QuantConv2d, nn.Conv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(kw.pop("c_in", 6), kw.pop("c_out", 8), kw.pop("k", 3), **kw)
    q = QuantConv2d.from_float(conv)
    q.w_quant.bits = q.a_quant.bits = 2
    return q, conv


def reference_conv(conv: nn.Conv2d, x: torch.Tensor, bits: int = 2) -> torch.Tensor:
    return conv._conv_forward(
        quantize_activation_reference(x, bits),
        quantize_weight_reference(conv.weight, bits),
        conv.bias,
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"padding": 1, "bias": False},
        {"stride": 2, "padding": 2, "dilation": 2, "bias": True},
        {"c_in": 8, "groups": 2, "k": 1, "bias": True},
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_conv_matches_reference(ext, kw, channels_last):
    q, conv = conv_pair(0, **kw)
    x = finite(act_input((3, conv.in_channels, 9, 7), seed=6))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xq, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_q = q(xq)
    assert type(out_q.grad_fn).__name__ == "_QuantConv2dBackward"
    out_r = reference_conv(conv, xr)
    assert_same_values(out_q, out_r)
    up = torch.randn(out_q.shape, generator=torch.Generator().manual_seed(2))
    out_q.backward(up)
    gw_q, gb_q = q.weight.grad.clone(), None if q.bias is None else q.bias.grad.clone()
    q.zero_grad()
    out_r.backward(up)
    # weight and bias: the same ATen convolution_backward on bitwise equal operands
    assert torch.equal(gw_q, conv.weight.grad)
    if gb_q is not None:
        assert torch.equal(gb_q, conv.bias.grad)
    torch.testing.assert_close(xq.grad, xr.grad, rtol=F32_ULP, atol=0)
    assert torch.equal(xq.grad == 0, xr.grad == 0)


def test_fused_conv_saves_the_input_not_a_quantized_copy(ext):
    q, _ = conv_pair(1, padding=1)
    x = torch.rand(2, 6, 8, 8, requires_grad=True)
    a = torch.relu(x)  # autograd keeps `a` for relu's backward anyway
    out = q(a)
    saved = out.grad_fn.saved_tensors
    assert saved[0].data_ptr() == a.data_ptr()  # no extra (N, C, H, W) float copy
    assert all(t.dtype != torch.bool for t in saved)  # and no mask


def test_fused_conv_equals_unfused_path_in_a_resnet(ext):
    torch.manual_seed(0)
    model = quantize(build_model("resnet20", num_classes=10), 2, 2).train()
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(0, 10, (8,))

    def run(backend: str):
        model.zero_grad(set_to_none=True)
        with _kernels.use_backend(backend):
            logits = model(x)
            nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (l1, g1), (l2, g2) = run("auto"), run("torch")
    assert torch.equal(l1, l2)
    for name in g1:  # the PyTorch path's activation STE also returns g exactly
        assert torch.equal(g1[name], g2[name]), name


def test_fused_conv_in_another_thread_uses_its_own_scratch(ext):
    q, _ = conv_pair(3, padding=1)
    x = finite(act_input((2, 6, 12, 12), seed=9))
    results = {}

    def work(key: str) -> None:
        xi = x.clone().requires_grad_(True)
        q(xi).sum().backward()
        results[key] = xi.grad

    t = threading.Thread(target=work, args=("thread",))
    t.start()
    t.join()
    work("main")
    assert torch.equal(results["thread"], results["main"])


def test_forced_fallback_equals_reference():
    x = act_input(seed=12)
    w = weight_input(seed=12)
    up = torch.randn(x.shape, generator=torch.Generator().manual_seed(13))
    with _kernels.use_backend("torch"):
        assert _kernels.backend_name() == "torch"
        check_activation(x, 2, up)
        y1, y2, g1, g2 = weight_grads(w, 2, torch.ones_like(w))
        assert_same_values(y1, y2)
        assert torch.equal(g1, g2)
        q, conv = conv_pair(4, padding=1)
        xi = finite(act_input((2, 6, 5, 5), seed=14))
        out = q(xi.requires_grad_(True))
        assert type(out.grad_fn).__name__ != "_QuantConv2dBackward"
        assert_same_values(out, reference_conv(conv, xi))


def test_missing_compiler_falls_back_silently_and_logs(tmp_path, caplog):
    loader = _kernels.ExtensionLoader(root=tmp_path, cxx="no-such-compiler-xyz")
    with caplog.at_level(logging.INFO, logger="lowbit.quant._kernels"), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be raised or warned
        assert loader.load() is None
    assert "no-such-compiler-xyz" in loader.reason
    assert any("PyTorch" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert loader.load() is None  # remembered, not retried
    assert not list(tmp_path.iterdir())  # nothing was built
    with pytest.raises(RuntimeError, match="compiler"):
        loader.load(strict=True)


def test_missing_kernel_source_falls_back(tmp_path, monkeypatch, caplog):
    # a wheel built without the csrc/ package data
    monkeypatch.setattr(_kernels, "SOURCE", tmp_path / "missing.cpp")
    loader = _kernels.ExtensionLoader(root=tmp_path)
    with caplog.at_level(logging.INFO, logger="lowbit.quant._kernels"):
        assert loader.load() is None
    assert "source missing" in loader.reason


def test_backend_setting_validated(monkeypatch):
    monkeypatch.setenv("LOWBIT_KERNELS", "fortran")
    with pytest.raises(ValueError, match="LOWBIT_KERNELS"):
        _kernels.requested_backend()
    monkeypatch.setenv("LOWBIT_KERNELS", "torch")
    assert _kernels.cpu_extension() is None
    with pytest.raises(ValueError), _kernels.use_backend("fast"):
        pass


def test_extension_name_tracks_the_source(tmp_path):
    a, b = tmp_path / "a.cpp", tmp_path / "b.cpp"
    a.write_text("int x;")
    b.write_text("int y;")
    assert _kernels.extension_name(a) != _kernels.extension_name(b)
    assert _kernels.extension_name(a) == _kernels.extension_name(a)


def test_compiled_layer_traces_the_reference_ops(ext):
    # Under torch.compile the Python path is traced (kernels_for -> None), so dynamo
    # sees plain ops; backend="eager" checks the tracing without inductor's compile time.
    q, conv = conv_pair(5, padding=1)
    x = torch.rand(2, 6, 6, 6) * 1.2 - 0.1
    compiled = torch.compile(q, backend="eager", fullgraph=True)
    assert_same_values(compiled(x), reference_conv(conv, x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bits", [2, 4, 32])
def test_cuda_paths_match_reference(bits):
    dev = torch.device("cuda")
    x = act_input(seed=bits).to(dev)
    up = torch.randn(x.shape, device=dev)
    check_activation(x, bits, up)
    w = weight_input(seed=bits).to(dev)
    y1, y2, g1, g2 = weight_grads(w, bits, torch.randn(w.shape, device=dev))
    assert_same_values(y1, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=0)
    q, conv = conv_pair(6, padding=1)
    q, conv = q.to(dev), conv.to(dev)
    xi = finite(act_input((2, 6, 5, 5), seed=bits)).to(dev)
    # same operands; cuDNN may pick another algorithm per call, so not bitwise
    torch.testing.assert_close(q(xi), reference_conv(conv, xi, 2), rtol=1e-5, atol=1e-5)


def test_torch_func_transforms_take_the_plain_ops(ext):
    w = weight_input(seed=21)
    g_func = torch.func.grad(lambda v: quantize_weight(v, 2).sum())(w)
    w2 = w.clone().requires_grad_(True)
    quantize_weight_reference(w2, 2).sum().backward()
    assert torch.equal(g_func, w2.grad)
    x = finite(act_input(seed=23))
    gx_func = torch.func.grad(lambda v: quantize_activation(v, 2).sum())(x)
    assert torch.equal(gx_func, torch.where((x >= 0) & (x <= 1), 1.0, 0.0))


def test_scratch_release_keeps_results(ext):
    from lowbit.quant import fused

    q, conv = conv_pair(7, padding=1)
    x = finite(act_input((2, 6, 7, 7), seed=22))
    first = q(x.clone().requires_grad_(True))
    fused.release_scratch()
    second = q(x.clone().requires_grad_(True))
    assert_same_values(first, second)
    assert_same_values(first, reference_conv(conv, x))


def test_the_build_finds_the_venvs_ninja_without_an_activated_venv(tmp_path, monkeypatch):
    # the installer prebuilds with the venv's python while PATH lacks the venv's bin/,
    # where pip's ninja lives; cpp_extension runs `ninja` from PATH
    from torch.utils import cpp_extension

    seen = {}

    def fake_load(**kwargs):
        seen["path"] = os.environ["PATH"].split(os.pathsep)
        raise RuntimeError("stop before compiling")

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    with pytest.raises(RuntimeError, match="stop before compiling"):
        _kernels.ExtensionLoader(root=tmp_path)._compile("x", tmp_path / "x")
    assert seen["path"][0] == os.path.dirname(sys.executable)
    assert os.environ["PATH"] == "/nonexistent"  # restored afterwards
