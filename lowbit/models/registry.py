"""Build a model by name for a dataset's class count and image size."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lowbit.errors import ConfigError
from lowbit.models.alexnet_bn import AlexNetBN
from lowbit.models.blocks import torchvision_blocks
from lowbit.models.cifar_resnet import BasicBlock, CifarResNet, PreActBlock


def _torchvision_resnet(arch: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, image_size: int) -> nn.Module:
        import torchvision  # only for these models (see models.blocks.torchvision_blocks)

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if image_size <= 64:
            # Small images: a 3x3 stride-1 stem without max-pool, so 32x32 inputs keep
            # 4x4 maps at the last stage instead of 1x1.
            model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        return model

    return build


def _alexnet_bn(num_classes: int, image_size: int) -> nn.Module:
    if image_size < 63:
        raise ConfigError(f"alexnet_bn needs images of at least 63 pixels, got {image_size}")
    return AlexNetBN(num_classes)


MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet20": lambda c, s: CifarResNet(20, c, preact=False),
    "preresnet20": lambda c, s: CifarResNet(20, c, preact=True),
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet34": _torchvision_resnet("resnet34"),
    "resnet50": _torchvision_resnet("resnet50"),
    "alexnet_bn": _alexnet_bn,
}


def build_model(name: str, num_classes: int, image_size: int = 32) -> nn.Module:
    """A freshly initialised float model."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    return MODELS[name](num_classes, image_size)


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The residual blocks of a ResNet (the `block` unit of stochastic precision)."""
    kinds = (BasicBlock, PreActBlock, *torchvision_blocks())
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
