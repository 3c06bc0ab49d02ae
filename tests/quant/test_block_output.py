"""The block-output policy (paper.md §1, the authors' code): the post-addition ReLU of
every post-activation residual block but the last is the activation quantizer, so the
next block's shortcut and first conv read k-bit values; `block_output="fp"` keeps the
residual stream in full precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit.methods.stochastic_precision import StochasticPrecision
from lowbit.models import build_model
from lowbit.quant import iter_quantizers, quantization, quantize
from lowbit.quant.convert import load_float_state_dict
from lowbit.quant.layers import QuantizedInput


def _outs(q: nn.Module) -> list[str]:
    return [n.removesuffix(".out_quant") for n, _ in iter_quantizers(q) if n.endswith("out_quant")]


def _fed(q: nn.Module) -> dict[str, str]:
    return {
        n.removesuffix(".a_quant"): m.source
        for n, m in q.named_modules()
        if isinstance(m, QuantizedInput)
    }


R50 = ((1, 3), (2, 4), (3, 6), (4, 3))  # (stage, blocks) of ResNet-50
RESNET20_BLOCKS = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]


@pytest.mark.parametrize(
    "arch,size,quantized_outputs",
    [
        ("resnet20", 32, RESNET20_BLOCKS[:-1]),  # 9 blocks, the last feeds the fp fc
        ("resnet18", 32, [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)][:-1]),
        ("resnet50", 32, [f"layer{s}.{b}" for s, n in R50 for b in range(n)][:-1]),
        ("preresnet20", 32, []),  # pre-activation: no post-addition ReLU to quantize
        ("alexnet_bn", 64, []),  # no residual blocks
    ],
)
def test_which_block_outputs_are_quantized(arch, size, quantized_outputs):
    q = quantize(build_model(arch, 10, size), 2, 2)
    assert _outs(q) == quantized_outputs
    fed = _fed(q)
    # every reader of a quantized output is the next block's conv1 (and downsample conv)
    assert set(fed.values()) == set(quantized_outputs)
    assert all(r.rsplit(".", 2)[-1] in ("conv1", "0") for r in fed)
    assert _outs(quantize(build_model(arch, 10, size), 2, 2, block_output="fp")) == []


def test_resnet20_readers():
    fed = _fed(quantize(build_model("resnet20", 10), 2, 2))
    assert fed["layer1.1.conv1"] == "layer1.0"
    assert fed["layer2.0.conv1"] == fed["layer2.0.downsample.0"] == "layer1.2"
    assert "layer1.0.conv1" not in fed  # the stem's output: the layer quantizes it itself
    assert len(fed) == 8 + 2  # 8 next-block conv1s + the 2 downsample convs


def _capture(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    model.get_submodule(name).register_forward_hook(lambda m, a, out: seen.update(out=out))
    return seen


@pytest.mark.parametrize("bits", [2, 4])
def test_shortcuts_carry_k_bit_values(bits):
    torch.manual_seed(0)
    q = quantize(build_model("resnet20", 10), bits, bits).eval()
    seen = _capture(q, "layer1.2")  # its output is layer2.0's shortcut input
    q(torch.randn(4, 3, 32, 32))
    n = 2**bits - 1
    out = seen["out"]
    assert torch.equal(out, torch.round(out * n) / n) and out.min() >= 0 and out.max() <= 1
    assert len(torch.unique(out)) > 1
    last = _capture(q, "layer3.2")
    q(torch.randn(4, 3, 32, 32))
    assert not torch.equal(last["out"], torch.round(last["out"] * n) / n)  # stays a ReLU
    fp = quantize(build_model("resnet20", 10), bits, bits, block_output="fp").eval()
    seen_fp = _capture(fp, "layer1.2")
    fp(torch.randn(4, 3, 32, 32))
    assert seen_fp["out"].max() > 1  # full-precision residual stream


def test_disabled_block_quantizers_are_the_float_network():
    torch.manual_seed(0)
    net = build_model("resnet20", 10).eval()
    q = quantize(net, 2, 2).eval()
    x = torch.randn(3, 3, 32, 32)
    with quantization(q, weights=False, activations=False):
        assert torch.equal(q(x), net(x))


def test_float_checkpoint_loads_and_gradients_flow_through_block_outputs():
    torch.manual_seed(0)
    net = build_model("resnet20", 10)
    q = quantize(build_model("resnet20", 10), 2, 2, quantizer="pact")
    load_float_state_dict(q, net.state_dict())  # PACT alphas of the block outputs: absent
    q(torch.randn(2, 3, 32, 32)).sum().backward()
    alpha = q.get_submodule("layer1.0.out_quant").alpha
    assert alpha.grad is not None and q.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_stochastic_precision_units_hold_each_block_output_once():
    q = quantize(build_model("resnet20", 10), 2, 2)
    for unit in ("layer", "block"):
        sp = StochasticPrecision(q, unit=unit)
        members = [id(x) for u in sp.units for x in u]
        assert len(members) == len(set(members)), unit
        assert set(members) == {id(x) for _, x in iter_quantizers(q)}, unit
