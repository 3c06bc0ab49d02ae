"""CIFAR ResNet-20 and PreResNet-20 (He et al. 2016), the paper's CIFAR networks.

Three stages of n basic blocks at 16/32/64 channels on 32x32 inputs (depth = 6n + 2);
the shortcut that changes shape is a 1x1 conv + BN, as in the authors' code.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _downsample(c_in: int, c_out: int, stride: int, with_bn: bool) -> nn.Module | None:
    if stride == 1 and c_in == c_out:
        return None
    conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out)) if with_bn else nn.Sequential(conv)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, + shortcut, ReLU (post-activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, c_out, stride, with_bn=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv, + shortcut (pre-activation, He et al. 2016b)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.downsample = _downsample(c_in, c_out, stride, with_bn=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs; `preact=True` gives PreResNet."""

    def __init__(self, depth: int = 20, num_classes: int = 10, preact: bool = False) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        block = PreActBlock if preact else BasicBlock
        self.preact = preact
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, c_in = [], 16
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, width, 2 if (i > 0 and j == 0) else 1))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(64) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, 3, H, W) normalised images -> logits (N, num_classes)
        out = self.conv1(x)
        # PreResNet: the first block normalises its own input, so no BN-ReLU here.
        if not self.preact:
            out = self.relu(self.bn1(out))
        out = self.layer3(self.layer2(self.layer1(out)))
        if self.preact:
            out = self.relu(self.bn_final(out))
        return self.fc(self.pool(out).flatten(1))
