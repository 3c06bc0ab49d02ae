"""Quantized layers, the model transform and precision control."""

import pytest
import torch
from torch import nn

from lowbit.errors import CheckpointError, ConfigError
from lowbit.models import build_model
from lowbit.quant import (
    QuantConv2d,
    QuantLinear,
    iter_quantizers,
    load_quant_state,
    quant_state,
    quantization,
    quantize,
    quantize_activation,
    quantize_weight,
    set_bits,
)
from lowbit.quant.convert import load_float_state_dict
from lowbit.quant.quantizers import LSQActivation, LSQWeight, PACTActivation


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10).eval()


def test_quant_layers_are_float_layers():
    assert issubclass(QuantConv2d, nn.Conv2d) and issubclass(QuantLinear, nn.Linear)


def test_conv_forward_is_quantized_input_and_weight():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    q = QuantConv2d.from_float(conv)
    q.w_quant.bits, q.a_quant.bits = 2, 2
    x = torch.randn(2, 4, 5, 5)
    ref = nn.functional.conv2d(
        quantize_activation(x, 2), quantize_weight(conv.weight, 2), conv.bias, padding=1
    )
    assert torch.equal(q(x), ref)


def test_disabled_quantizers_are_bit_identical_to_float(resnet):
    q = quantize(resnet, 2, 2).eval()
    x = torch.randn(4, 3, 32, 32)
    with quantization(q, weights=False, activations=False):
        assert torch.equal(q(x), resnet(x))
    assert not torch.equal(q(x), resnet(x))  # restored on exit


def test_linear_disabled_identity():
    fc = nn.Linear(5, 3)
    q = QuantLinear.from_float(fc)
    q.w_quant.enabled = q.a_quant.enabled = False
    x = torch.randn(7, 5)
    assert torch.equal(q(x), fc(x))


def test_layer_policy_first_conv_last_fc_fp_downsample_quantized(resnet):
    q = quantize(resnet, 2, 2)
    assert type(q.conv1) is nn.Conv2d and type(q.fc) is nn.Linear
    assert isinstance(q.layer2[0].downsample[0], QuantConv2d)  # 1x1 shortcut conv
    n_conv = sum(isinstance(m, nn.Conv2d) for m in resnet.modules())
    assert sum(isinstance(m, QuantConv2d) for m in q.modules()) == n_conv - 1
    assert isinstance(q.layer1[0].bn1, nn.BatchNorm2d)


def test_keep_fp_layers_untouched_and_input_not_modified(resnet):
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    q = quantize(resnet, 4, 4, keep_fp=["conv1", "fc", "layer3.2.conv2"])
    assert type(q.get_submodule("layer3.2.conv2")) is nn.Conv2d
    assert all(
        type(m) in (nn.Conv2d, nn.Linear)
        for m in resnet.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    )
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    with pytest.raises(ConfigError, match="keep_fp"):
        quantize(resnet, 4, 4, keep_fp=["nope"])


def test_state_dict_keys_preserved_and_fp_checkpoint_loads(resnet):
    q = quantize(resnet, 2, 2)
    assert list(q.state_dict()) == list(resnet.state_dict())
    other = build_model("resnet20", num_classes=10)
    q.load_state_dict(other.state_dict())  # strict
    assert torch.equal(q.layer1[0].conv1.weight, other.layer1[0].conv1.weight)


def test_set_bits_and_quant_state_roundtrip(resnet):
    q = quantize(resnet, 32, 32)
    set_bits(q, w_bits=4)
    assert {m.bits for _, m in iter_quantizers(q, "weight")} == {4}
    assert {m.bits for _, m in iter_quantizers(q, "activation")} == {32}
    set_bits(q, a_bits=2)
    state = quant_state(q)
    q2 = quantize(resnet)
    load_quant_state(q2, state)
    assert quant_state(q2) == state
    with pytest.raises(ConfigError):
        set_bits(q, w_bits=33)
    with pytest.raises(CheckpointError):
        load_quant_state(q2, {"x": {"bits": 2, "enabled": True}})


def test_torchvision_resnet18_last_block_output_stays_relu():
    m = build_model("resnet18", num_classes=10, image_size=224)
    q = quantize(m, 2, 2)
    # the last fc (full precision) is the only consumer of the last block's output,
    # so no activation quantizer is placed on it
    assert type(q.fc) is nn.Linear
    aq = [n for n, _ in iter_quantizers(q, "activation")]
    assert not any(n.startswith("fc") for n in aq)
    assert "layer4.1.conv2.a_quant" in aq


def test_alexnet_bn_hidden_fcs_quantized():
    q = quantize(build_model("alexnet_bn", num_classes=10, image_size=224), 2, 2)
    assert isinstance(q.classifier[0], QuantLinear) and isinstance(q.classifier[3], QuantLinear)
    assert type(q.classifier[6]) is nn.Linear and type(q.features[0]) is nn.Conv2d
    assert q.classifier[0].a_quant.bits == 2  # activation bits, not weight bits


@pytest.mark.parametrize("quantizer", ["pact", "lsq"])
def test_alternative_quantizers_same_interface(resnet, quantizer):
    q = quantize(resnet, 2, 2, quantizer=quantizer).train()
    x = torch.randn(4, 3, 32, 32)
    q(x).sum().backward()
    aq = q.layer1[0].conv2.a_quant
    assert isinstance(aq, PACTActivation if quantizer == "pact" else LSQActivation)
    p = aq.alpha if quantizer == "pact" else aq.step
    assert p.grad is not None and p.grad != 0
    with pytest.raises(CheckpointError):
        q.load_state_dict(resnet.state_dict()) if False else load_float_state_dict(
            q, {"x": torch.ones(1)}
        )
    load_float_state_dict(q, resnet.state_dict())  # only quantizer params missing: fine
    with quantization(q, weights=False, activations=False):
        assert torch.equal(q.eval()(x), resnet(x))


def test_pact_gradient_alpha_one_above_clip():
    p = PACTActivation(2)
    x = torch.tensor([-1.0, 0.5, 2.0, 3.0])
    p(x).sum().backward()
    assert float(p.alpha.grad) == pytest.approx(2.0)  # two inputs >= alpha
    assert torch.allclose(p(x), torch.tensor([0.0, 2 / 3, 1.0, 1.0]))


def test_lsq_weight_levels_signed():
    q = LSQWeight(2).train()
    w = torch.randn(1000)
    out = q(w)
    assert len(torch.unique(out)) <= 4
    assert torch.allclose(torch.unique(out / q.step.detach()), torch.tensor([-2.0, -1.0, 0.0, 1.0]))


def test_unknown_quantizer_rejected(resnet):
    with pytest.raises(ConfigError, match="unknown quantizer"):
        quantize(resnet, 2, 2, quantizer="xnor")
