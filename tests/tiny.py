"""The tiny quantized network that the DDP and compile tests train: three 3x3 convs of 8
channels, BN, ReLU, global pooling and a 10-way fc, at W2A2. Input (N, 3, H, W), any H, W."""

from __future__ import annotations

import torch
from torch import nn

from lowbit.quant import quantize


def tiny_w2a2(quantizer: str = "dorefa") -> nn.Module:
    torch.manual_seed(0)
    fp = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip
    return quantize(fp, 2, 2, quantizer=quantizer)
