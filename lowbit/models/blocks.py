"""Which residual blocks have a quantizable output, and which layers read it.

The authors' code replaces the post-addition ReLU of every residual block by the
activation quantizer, so the next block's shortcut and its first conv both receive
k-bit values (paper.md §1). The exception is the very last block: its output feeds the
full-precision fc and stays an ordinary ReLU (ResNet-18/34, the CIFAR nets; lowbit also
applies it to ResNet-50, whose released code quantizes it by accident, paper.md §7).
Pre-activation blocks (PreResNet) end with the addition, without a ReLU: their outputs
stay full precision, and each block's convs quantize their own inputs.
"""

from __future__ import annotations

import sys
from itertools import pairwise

from torch import nn

from lowbit.models.cifar_resnet import BasicBlock


def torchvision_blocks() -> tuple[type[nn.Module], ...]:
    """torchvision's ResNet blocks, once torchvision is loaded; () before. No instance can
    exist before it is, and importing it costs ~2 s per process (its ops pull in
    torch._dynamo), a third of a `lowbit stage` start-up: CIFAR runs never need it."""
    tv = sys.modules.get("torchvision.models.resnet")
    return () if tv is None else (tv.BasicBlock, tv.Bottleneck)


def post_activation() -> tuple[type[nn.Module], ...]:
    """Blocks whose forward ends in ReLU(residual + shortcut), with the block's input read
    by `conv1` and by `downsample[0]` (when the shortcut changes shape)."""
    return (BasicBlock, *torchvision_blocks())


def block_outputs(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(block name, names of the layers that read its output) for every post-activation
    block but the last, in forward order (each block feeds the next one).

    >>> from lowbit.models import build_model
    >>> outs = block_outputs(build_model("resnet20", 10))
    >>> len(outs), outs[0], outs[2]
    (8, ('layer1.0', ['layer1.1.conv1']), ('layer1.2', ['layer2.0.conv1', 'layer2.0.downsample.0']))
    """
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, post_activation())]
    out = []
    for (name, _), (next_name, nxt) in pairwise(blocks):
        readers = [f"{next_name}.conv1"]
        if getattr(nxt, "downsample", None) is not None:
            readers.append(f"{next_name}.downsample.0")
        out.append((name, readers))
    return out
