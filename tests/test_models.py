import pytest
import torch
from torch import nn

from lowbit.errors import ConfigError
from lowbit.models import MODELS, build_model, residual_blocks


@pytest.mark.parametrize(
    "name,size,n_conv",
    [("resnet20", 32, 21), ("preresnet20", 32, 21), ("resnet18", 32, 20), ("resnet50", 64, 53)],
)
def test_models_shapes_and_conv_counts(name, size, n_conv):
    m = build_model(name, num_classes=7, image_size=size).eval()
    assert m(torch.randn(2, 3, size, size)).shape == (2, 7)
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == n_conv


def test_resnet20_param_count_matches_he_et_al():
    m = build_model("resnet20", 10)
    n = sum(p.numel() for p in m.parameters())
    assert 0.26e6 < n < 0.28e6  # He et al. report 0.27M


def test_alexnet_bn_224():
    m = build_model("alexnet_bn", 5, 224).eval()
    assert m(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    with pytest.raises(ConfigError):
        build_model("alexnet_bn", 5, 32)


def test_registry_errors_and_blocks():
    assert {"resnet20", "preresnet20", "resnet18", "resnet34", "resnet50", "alexnet_bn"} <= set(
        MODELS
    )
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("vgg", 10)
    assert len(residual_blocks(build_model("resnet20", 10))) == 9
    assert len(residual_blocks(build_model("resnet18", 10))) == 8


def test_a_stage_process_imports_neither_torchvision_nor_scipy() -> None:
    # each `lowbit stage` is a process of its own: torchvision (~2 s, only for its ResNets)
    # and scipy.stats (~1 s, only for the report's tests) would be paid by every stage
    import subprocess
    import sys

    code = (
        "import sys, lowbit.cli, lowbit.training.run, lowbit.stages, lowbit.methods.direct\n"
        "from lowbit.models import build_model, residual_blocks\n"
        "assert len(residual_blocks(build_model('resnet20', 10))) == 9\n"
        "print(sorted(m for m in ('torchvision', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
