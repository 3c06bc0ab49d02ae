"""The per-layer integer audit: bits, exact code ranges, accumulator bounds, and one
clear line for a layer that breaks the policy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit.export import build_program, check_layers, format_check, require_integer
from lowbit.export.program import ExportError
from lowbit.models import build_model
from lowbit.quant.convert import quantize


def resnet20(bits: int = 2, **kw) -> nn.Module:
    torch.manual_seed(0)
    return quantize(build_model("resnet20", 10, 32), bits, bits, **kw).eval()


@pytest.mark.parametrize("bits", [2, 4])
def test_ranges_and_accumulator_bounds(bits):
    rows = {r.name: r for r in check_layers(resnet20(bits))}
    n = 2**bits - 1
    assert len(rows) == 22  # 21 convs and the fc
    assert [r.name for r in rows.values() if r.policy_fp] == ["conv1", "fc"]
    assert not rows["conv1"].integer and not rows["fc"].integer
    quantized = [r for r in rows.values() if not r.policy_fp]
    assert len(quantized) == 20 and all(r.integer and not r.problem for r in quantized)
    for r in quantized:
        assert r.w_bits == bits and r.a_bits == bits and r.a_range == (0, n)
        # DoReFa: the tanh arg-max element takes an extreme level, so max |w_int| = n
        assert -n <= r.w_range[0] and r.w_range[1] <= n and max(map(abs, r.w_range)) == n
    assert rows["layer1.0.conv1"].acc_bound == 16 * 9 * n * n  # fan_in 144
    assert rows["layer3.2.conv2"].acc_bound == 64 * 9 * n * n  # fan_in 576
    assert rows["layer2.0.downsample.0"].acc_bound == 16 * n * n  # 1x1 conv
    assert rows["layer3.2.conv2"].acc_bits == (64 * 9 * n * n).bit_length() + 1
    assert rows["layer1.0.conv1"].source == ""  # reads the float stem: quantizes itself
    assert rows["layer1.1.conv1"].source == "layer1.0"  # reads layer1.0's out_quant codes
    assert rows["layer2.0.downsample.0"].source == "layer1.2"


def test_table_has_one_line_per_layer():
    text = format_check(check_layers(resnet20(2)))
    lines = text.splitlines()
    assert len(lines) == 23 and lines[0].startswith("layer")
    assert "float (policy)" in lines[1] and lines[1].startswith("conv1")
    assert "[0, 3]" in lines[2] and lines[2].rstrip().endswith("yes")
    assert "block layer1.0" in text


def _disable_weight(m):
    m.layer2[0].conv2.w_quant.enabled = False


def _no_rounding(m):
    m.layer1[0].conv1.a_quant.bits = 32


def _missing_input(m):
    m.layer3[1].conv2.a_quant = nn.Identity()


def _disabled_source(m):
    m.layer1[0].out_quant.enabled = False


def _plain_conv(m):
    m.layer2[1].conv1 = nn.Conv2d(32, 32, 3, padding=1, bias=False)


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (_disable_weight, "layer layer2.0.conv2 is not integer-only: weight quantizer disabled"),
        (_no_rounding, "layer layer1.0.conv1 is not integer-only: input quantizer at 32 bits"),
        (_missing_input, "layer layer3.1.conv2 is not integer-only: input quantizer missing"),
        (
            _disabled_source,
            "layer layer1.1.conv1 is not integer-only: input quantizer disabled "
            "(out_quant of block layer1.0)",
        ),
        (_plain_conv, "layer layer2.1.conv1 is not integer-only: not quantized"),
    ],
)
def test_a_layer_that_breaks_the_policy_is_named(breaks, message):
    model = resnet20(2)
    breaks(model)
    with pytest.raises(ExportError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        require_integer(check_layers(model))
    with pytest.raises(ExportError, match="is not integer-only"):
        build_program(model)


def test_disabled_layers_are_counted():
    model = resnet20(2)
    for conv in (model.layer1[0].conv2, model.layer3[2].conv1):
        conv.w_quant.enabled = False
    with pytest.raises(ExportError, match=r"layer1.0.conv2 .* \(and 1 more layers\)"):
        require_integer(check_layers(model))


def test_full_precision_network_is_refused():
    with pytest.raises(ExportError, match="full precision: it has no quantized layers"):
        require_integer(check_layers(build_model("resnet20", 10, 32)))


def test_preresnet_is_refused_with_the_supported_list():
    model = quantize(build_model("preresnet20", 10, 32), 2, 2)
    with pytest.raises(ExportError, match="post-activation ResNets .* not CifarResNet"):
        build_program(model)


def test_lsq_signed_weight_codes_and_pact_ranges():
    model = resnet20(2, quantizer="lsq")
    model.train()(torch.randn(8, 3, 16, 16))  # LSQ initialises its steps on a first batch
    rows = check_layers(model.eval())
    assert all(r.w_range == (-2, 1) for r in rows if r.integer)  # signed 2-bit codes
    rows = check_layers(resnet20(4, quantizer="pact"))
    assert all(r.a_range == (0, 15) for r in rows if r.integer)
