"""Build the integer program of a quantized post-activation ResNet (eval mode).

Supported: lowbit's CIFAR ResNet-20 (not PreResNet) and torchvision ResNet-18/34/50.
Both share the layout stem (conv1, bn1, relu[, maxpool]) -> layer1..layer4 of blocks
(conv_i followed by bn_i; shortcut downsample = Sequential(conv, bn)) -> pool -> fc,
so each quantized conv's BatchNorm is the one with the same index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torchvision
from torch import nn

from lowbit.export.check import check_layers, require_integer
from lowbit.export.codes import act_spec, fold_bn, weight_codes
from lowbit.export.program import Block, ExportError, IntConv, Program, Stem
from lowbit.models.blocks import post_activation
from lowbit.models.cifar_resnet import CifarResNet
from lowbit.quant.layers import QuantConv2d, QuantizedInput

SUPPORTED = "resnet20, resnet18, resnet34, resnet50"


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _int_conv(model: nn.Module, name: str, conv: nn.Module, bn: nn.Module | None) -> IntConv:
    if not isinstance(conv, QuantConv2d):
        raise ExportError(f"layer {name} is not a quantized conv")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ExportError(f"layer {name}: only numeric zero padding is exported")
    source = conv.a_quant.source if isinstance(conv.a_quant, QuantizedInput) else ""
    act = act_spec(model.get_submodule(source).out_quant if source else conv.a_quant)
    w_int, kind, w_scale = weight_codes(conv.w_quant, conv.weight, name)
    scale, shift = fold_bn(act.scale * w_scale, conv.bias, bn, conv.out_channels)
    return IntConv(
        name=name,
        weight=w_int,
        w_bits=conv.w_quant.bits,
        w_kind=kind,
        w_scale=w_scale,
        act=act,
        source=source,
        stride=_pair(conv.stride),
        padding=_pair(conv.padding),
        dilation=_pair(conv.dilation),
        groups=int(conv.groups),
        scale=scale,
        shift=shift,
    )


def _block(model: nn.Module, name: str, block: nn.Module, previous: Block | None) -> Block:
    convs, i = [], 1
    while hasattr(block, f"conv{i}"):
        conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
        convs.append(_int_conv(model, f"{name}.conv{i}", conv, bn))
        i += 1
    ds = getattr(block, "downsample", None)
    downsample = None
    if ds is not None:
        downsample = _int_conv(model, f"{name}.downsample.0", ds[0], ds[1] if len(ds) > 1 else None)
    out = act_spec(block.out_quant) if hasattr(block, "out_quant") else None
    result = Block(name, convs, downsample, out)
    # Codes flow only from a block's out_quant into the next block's readers.
    fed = previous.name if previous is not None and previous.out is not None else ""
    for layer in result.layers():
        if layer.source and layer.source != fed:
            raise ExportError(f"layer {layer.name} reads block {layer.source}, not its input")
    return result


def _stem(model: nn.Module) -> Stem:
    conv, bn = model.conv1, model.bn1
    if type(conv) is not nn.Conv2d:
        raise ExportError("export expects the first conv (conv1) to stay full precision")
    scale, shift = fold_bn(1.0, conv.bias, bn, conv.out_channels)
    pool = getattr(model, "maxpool", None)
    maxpool = None
    if isinstance(pool, nn.MaxPool2d):
        maxpool = (_pair(pool.kernel_size)[0], _pair(pool.stride)[0], _pair(pool.padding)[0])
    return Stem(
        weight=conv.weight.detach().float().cpu().numpy(),
        stride=_pair(conv.stride),
        padding=_pair(conv.padding),
        scale=scale,
        shift=shift,
        maxpool=maxpool,
    )


def _check_arch(model: nn.Module) -> None:
    ok = isinstance(model, torchvision.models.ResNet) or (
        isinstance(model, CifarResNet) and not model.preact
    )
    if not ok:
        raise ExportError(
            f"integer export supports post-activation ResNets ({SUPPORTED}), "
            f"not {type(model).__name__}{' (PreResNet)' if getattr(model, 'preact', 0) else ''}"
        )
    if type(model.fc) is not nn.Linear:
        raise ExportError("export expects the last fc to stay full precision")


def build_program(model: nn.Module, arch: dict[str, Any] | None = None) -> Program:
    """The integer program of `model` (a quantized ResNet; its eval-mode BN stats are
    folded). Raises ExportError naming the first layer that is not integer-only."""
    _check_arch(model)
    require_integer(check_layers(model))
    blocks: list[Block] = []
    kinds = post_activation()
    for name, m in model.named_modules():
        if isinstance(m, kinds):
            blocks.append(_block(model, name, m, blocks[-1] if blocks else None))
    fc = model.fc
    bias = fc.bias if fc.bias is not None else None
    return Program(
        arch=dict(arch or {}),
        stem=_stem(model),
        blocks=blocks,
        fc_weight=fc.weight.detach().float().cpu().numpy(),
        fc_bias=np.zeros(fc.out_features, np.float32)
        if bias is None
        else bias.detach().float().cpu().numpy(),
    )
