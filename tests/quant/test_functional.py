"""The paper's quantizers (§3.1): exact values, levels, STE gradients, bit checks."""

import pytest
import torch

from lowbit.errors import ConfigError
from lowbit.quant.functional import (
    check_bits,
    quantize_activation,
    quantize_activation_reference,
    quantize_weight,
)


def test_weight_2bit_levels_are_minus1_third_third_1():
    w = torch.randn(256, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    levels = torch.unique(quantize_weight(w, 2))
    assert torch.allclose(levels, torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))


def test_weight_4bit_has_16_levels_in_range():
    w = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3
    q = quantize_weight(w, 4)
    levels = torch.unique(q)
    assert len(levels) == 16
    assert torch.allclose(levels, torch.linspace(-1, 1, 16), atol=1e-6)


def test_weight_hand_computed_values():
    w = torch.tensor([-2.0, -0.1, 0.0, 0.3, 1.0])
    t = torch.tanh(w)
    m = t.abs().max()  # tanh(2) = 0.96403
    z = t / (2 * m) + 0.5  # [0, 0.44826, 0.5, 0.65157, 0.89502]
    # 2 bits: round(3 z) / 3 = [0, 1/3, 2/3 (0.5*3=1.5 rounds to even 2), 2/3, 1]
    expected = 2 * torch.round(3 * z) / 3 - 1
    assert torch.allclose(expected, torch.tensor([-1.0, -1 / 3, 1 / 3, 1 / 3, 1.0]))
    assert torch.allclose(quantize_weight(w, 2), expected)


def test_weight_32bit_is_tanh_normalised_unrounded():
    w = torch.tensor([-2.0, 0.5, 1.0])
    t = torch.tanh(w)
    assert torch.allclose(quantize_weight(w, 32), t / t.abs().max())


def test_weight_gradient_is_ste_through_round_and_reaches_argmax():
    w = torch.tensor([0.2, -0.5, 1.5], requires_grad=True)
    quantize_weight(w, 2).sum().backward()
    # Reference: the same expression with round replaced by identity (STE).
    w2 = w.detach().clone().requires_grad_(True)
    t = torch.tanh(w2)
    (2 * (t / (2 * t.abs().max()) + 0.5) - 1).sum().backward()
    assert torch.allclose(w.grad, w2.grad)
    assert w.grad[2] != 0  # the arg-max element gets gradient through max|t| (not detached)


def test_activation_values_and_clip():
    x = torch.tensor([-0.5, 0.0, 0.1, 0.2, 0.5, 0.9, 1.0, 3.0])
    # 2 bits: levels {0, 1/3, 2/3, 1}
    exp = torch.tensor([0.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    # round(1.5)=2 (half to even) for 0.5 -> 2/3
    assert torch.allclose(quantize_activation(x, 2), exp)
    assert torch.equal(quantize_activation(x, 32), x.clamp(0, 1))


def test_activation_4bit_levels():
    x = torch.linspace(-1, 2, 10001)
    assert len(torch.unique(quantize_activation(x, 4))) == 16


def test_activation_gradient_zero_outside_clip_one_inside():
    x = torch.tensor([-0.5, 0.0, 0.3, 0.7, 1.0, 1.5], requires_grad=True)
    quantize_activation(x, 2).backward(torch.arange(1.0, 7.0))
    # clamp's gradient, boundaries included, times the STE's 1
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 5.0, 0.0]))


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16, 32])
def test_fused_activation_matches_reference(bits):
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(4, 8, 5, 5, generator=g) * 0.8 + 0.4).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    upstream = torch.randn(x.shape, generator=g)
    y, y2 = quantize_activation(x, bits), quantize_activation_reference(x2, bits)
    assert torch.equal(y, y2)
    y.backward(upstream)
    y2.backward(upstream)
    # The reference's chain rule computes (g / n) * n, which differs from g in the last
    # float bit; the fused path returns g * mask exactly.
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=0)
    assert torch.equal(x.grad == 0, x2.grad == 0)


@pytest.mark.parametrize("bad", [0, 1, 33, -2, 2.5, "4", True, None])
def test_bits_out_of_range_rejected(bad):
    with pytest.raises(ConfigError, match="bits"):
        check_bits(bad)
    with pytest.raises(ConfigError):
        quantize_weight(torch.ones(3), bad)
    with pytest.raises(ConfigError):
        quantize_activation(torch.ones(3), bad)
