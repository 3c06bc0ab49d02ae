"""The networks of the benchmark: CIFAR ResNet-20 in float, quantized by lowbit, and
quantized by the peer libraries where lowbit quantizes (the paper's layer policy: first
conv and last fc stay float)."""

from __future__ import annotations

import copy
import warnings

from torch import nn

from lowbit.models import build_model
from lowbit.quant import _kernels, quantize
from lowbit.quant.convert import default_keep_fp

NUM_CLASSES = 10


def float_net() -> nn.Module:
    return build_model("resnet20", NUM_CLASSES)


def brevitas_net(fp: nn.Module, bits: int = 2) -> nn.Module:
    """ResNet-20 with brevitas layers where lowbit quantizes (its own per-tensor scales):
    QuantConv2d (k-bit weights) for every conv but the first, QuantReLU (k-bit) for every
    ReLU that feeds one."""
    with _kernels._quiet("torch.utils.cpp_extension"):  # brevitas imports it: a CUDA warning
        import brevitas.nn as qnn

    model = copy.deepcopy(fp)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name in convs[1:]:  # the first conv stays float
        c = model.get_submodule(name)
        q = qnn.QuantConv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            stride=c.stride,
            padding=c.padding,
            bias=c.bias is not None,
            weight_bit_width=bits,
        )
        q.weight.data.copy_(c.weight.data)
        model.set_submodule(name, q)
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for name in relus[:-1]:  # the last ReLU feeds the float fc
        model.set_submodule(name, qnn.QuantReLU(bit_width=bits))
    return model


def torch_ao_net(fp: nn.Module) -> nn.Module:
    """Eager-mode QAT: prepare_qat with fbgemm's default qconfig (int8 fake quantization)."""
    from torch.ao import quantization as tq

    model = copy.deepcopy(fp).train()
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    for name in default_keep_fp(model):
        model.get_submodule(name).qconfig = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prepare_qat's deprecation notice
        tq.prepare_qat(model, inplace=True)
    return model


def network(model: str, fp: nn.Module) -> nn.Module:
    """The trained network of a row's `model` kind, built from the float `fp`."""
    if model == "fp":
        return copy.deepcopy(fp)
    if model == "lowbit_w4a4":
        return quantize(fp, 4, 4)
    if model.startswith("lowbit_w2a2"):  # plain, stochastic precision, KD student
        return quantize(fp, 2, 2)
    if model == "brevitas_w2a2":
        return brevitas_net(fp)
    if model == "torch_ao_qat":
        return torch_ao_net(fp)
    raise ValueError(f"unknown network {model!r}")
