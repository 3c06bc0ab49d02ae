"""torch.compile of quantized networks on the CPU (inductor): the quantizers' values and
straight-through gradients equal the reference formulas; a new bit-width recompiles once,
a stochastic-precision step never; a resumed compiled run equals an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from lowbit import engine
from lowbit.methods.stochastic_precision import StochasticPrecision
from lowbit.quant import set_bits
from lowbit.quant.functional import (
    quantize_activation,
    quantize_activation_reference,
    quantize_weight,
    quantize_weight_reference,
)
from tests.tiny import tiny_w2a2

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # tests/conftest.py


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_compiled_weight_quantizer_equals_the_reference(bits):
    torch.manual_seed(bits)
    w = torch.randn(8, 4, 3, 3)
    w.view(-1)[5] = 3.0  # a clear arg-max: its max-path gradient is checked too
    g = torch.randn_like(w)
    ref_w = w.clone().requires_grad_()
    ref = quantize_weight_reference(ref_w, bits)
    ref.backward(g)
    cw = w.clone().requires_grad_()
    out = torch.compile(lambda t: quantize_weight(t, bits), backend="inductor")(cw)
    out.backward(g)
    assert torch.equal(out, ref)
    # the max path sums over the tensor: another order of additions, float32 rounding
    torch.testing.assert_close(cw.grad, ref_w.grad, rtol=1e-5, atol=1e-6)
    assert cw.grad.view(-1)[5] != 0  # the max path reaches the arg-max element


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_compiled_activation_quantizer_equals_the_reference(bits):
    torch.manual_seed(bits)
    x = torch.randn(4, 8, 5, 5) * 0.8 + 0.4
    g = torch.randn_like(x)
    ref_x = x.clone().requires_grad_()
    ref = quantize_activation_reference(ref_x, bits)
    ref.backward(g)
    cx = x.clone().requires_grad_()
    out = torch.compile(lambda t: quantize_activation(t, bits), backend="inductor")(cx)
    out.backward(g)
    assert torch.equal(out, ref)
    # the STE exactly: the upstream gradient inside [0, 1], zero outside (the reference's
    # chain rule, (g / n) * n, can differ from g in the last bit)
    assert torch.equal(cx.grad, torch.where((x >= 0) & (x <= 1), g, 0.0))
    torch.testing.assert_close(cx.grad, ref_x.grad, rtol=2**-22, atol=0)


def _step(model: nn.Module, x: torch.Tensor) -> None:
    model(x).sum().backward()


def test_a_new_bit_width_recompiles_once_and_sp_steps_never():
    model = tiny_w2a2()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x = torch.randn(4, 3, 8, 8)
    _step(compiled, x)
    base = counter.frame_count
    for bits in (4, 2, 4, 2):  # two distinct configurations, each compiled once
        set_bits(model, w_bits=bits, a_bits=bits)
        _step(compiled, x)
    assert counter.frame_count == base + 1
    sp = StochasticPrecision(model, unit="layer", seed=0)
    sp.use_gates()
    _step(compiled, x)
    after_gates = counter.frame_count
    masks = set()
    for step in range(12):  # p = 0.5: a new random sub-network every step
        sp.on_step(step, 100)
        masks.add(tuple(sp.last_mask.tolist()))
        _step(compiled, x)
    assert len(masks) > 3 and counter.frame_count == after_gates


def test_gated_quantizers_are_the_enabled_ones():
    """A gate switched off is the quantizer disabled: values and gradients."""
    x = torch.randn(2, 3, 8, 8)
    a, b = tiny_w2a2(), tiny_w2a2()
    sp_a, sp_b = StochasticPrecision(a, seed=3), StochasticPrecision(b, seed=3)
    sp_b.use_gates()
    sp_a.on_step(0, 100)
    sp_b.on_step(0, 100)
    assert torch.equal(sp_a.last_mask, sp_b.last_mask) and not sp_a.last_mask.all()
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa.grad, pb.grad), n


def test_resumed_compiled_run_equals_an_uninterrupted_one(digits, tmp_path):
    train, val = digits
    ex = engine.Execution(compile=True)

    def trainee():
        return engine.make_trainee("net", tiny_w2a2(), engine.OptimSpec(lr=0.05), CPU, ex)

    def spec(epochs, name):
        return engine.FitSpec(epochs, 0, CPU, tmp_path / name, progress=False, execution=ex)

    full = trainee()
    engine.fit([full], train, val, spec(2, "full.pt"))
    engine.fit([trainee()], train, val, spec(1, "part.pt"))  # "killed" after epoch 1
    resumed = trainee()
    hist = engine.fit([resumed], train, val, spec(2, "part.pt"))
    assert [r["epoch"] for r in hist.epochs] == [1, 2]
    for (k, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
