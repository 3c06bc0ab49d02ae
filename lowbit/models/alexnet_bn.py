"""AlexNet with BatchNorm after every conv and hidden fc (the paper's AlexNet-BN)."""

from __future__ import annotations

from torch import Tensor, nn


class AlexNetBN(nn.Module):
    """Krizhevsky et al.'s five convs and three fcs, BN in place of LRN; 224x224 input."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int, k: int, s: int = 1, p: int = 0) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, k, s, p, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *conv(3, 96, 11, 4, 2),
            nn.MaxPool2d(3, 2),
            *conv(96, 256, 5, 1, 2),
            nn.MaxPool2d(3, 2),
            *conv(256, 384, 3, 1, 1),
            *conv(384, 384, 3, 1, 1),
            *conv(384, 256, 3, 1, 1),
            nn.MaxPool2d(3, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096, bias=False),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096, bias=False),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, 3, 224, 224) -> (N, num_classes)
        return self.classifier(self.pool(self.features(x)).flatten(1))
