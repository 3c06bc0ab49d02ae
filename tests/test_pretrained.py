"""`pretrain.start`: FP pretraining from torchvision's published weights or a checkpoint.

This machine cannot download weights, so torchvision's files are made here: a state dict
of the real torchvision model, saved under the name torchvision gives the published
file, in the folder torchvision reads ($TORCH_HOME/hub/checkpoints). What is real: the
torchvision weights enums and their file names, torch.hub's cache folder, the loading
with weights_only=True, and a whole pretrain stage starting from a checkpoint file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from lowbit.config import load_config
from lowbit.errors import CheckpointError, ConfigError
from lowbit.models import build_model
from lowbit.models.pretrained import load_start
from lowbit.stages import stage_function


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: TORCH_HOME points at it, as a user's would."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def _published(hub: Path, arch: str = "resnet18") -> dict[str, torch.Tensor]:
    """torchvision's format: the torchvision model's own state dict, as the file the
    IMAGENET1K_V1 url names (resnet18-f37072fd.pth), here with recognisable values."""
    torch.manual_seed(7)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    state["fc.bias"] = torch.arange(1000, dtype=torch.float32)
    url = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
    torch.save(state, hub / Path(url).name)
    return state


def test_torchvision_weights_load_from_the_hub_cache(hub, tmp_path):
    state = _published(hub)
    model = build_model("resnet18", 1000, 224)
    got, source = load_start("torchvision:IMAGENET1K_V1", model, "resnet18", tmp_path)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    assert source.startswith("torchvision:ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)")
    assert "sha256 " in source
    default, _ = load_start("torchvision:DEFAULT", model, "resnet18", tmp_path)  # = V1 here
    assert torch.equal(default["fc.bias"], state["fc.bias"])


def test_missing_weights_say_where_to_put_them(hub, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_start(
            "torchvision:IMAGENET1K_V1", build_model("resnet18", 1000, 224), "resnet18", tmp_path
        )
    msg = str(e.value)
    assert "\n" not in msg
    assert "resnet18-f37072fd.pth" in msg and str(hub) in msg and "download" in msg


@pytest.mark.parametrize(
    "start,arch,match",
    [("torchvision:IMAGENET1K_V9", "resnet18", "choose one of DEFAULT, IMAGENET1K_V1"),
     ("torchvision:IMAGENET1K_V1", "alexnet_bn", "no weights for alexnet_bn"),
     ("missing.pth", "resnet18", "missing.pth not found")],
)  # fmt: skip
def test_bad_starts_are_one_line_errors(hub, tmp_path, start, arch, match):
    model = build_model(arch, 1000, 224)
    with pytest.raises(ConfigError, match=match) as e:
        load_start(start, model, arch, tmp_path)
    assert "\n" not in str(e.value)


def test_weights_that_do_not_fit_the_model_are_refused(hub, tmp_path):
    _published(hub)
    with pytest.raises(CheckpointError, match=r"fc.weight \(1000, 512\) vs \(10, 512\)") as e:
        load_start(
            "torchvision:IMAGENET1K_V1", build_model("resnet18", 10, 224), "resnet18", tmp_path
        )
    assert "\n" not in str(e.value)
    small = build_model("resnet18", 1000, 32)  # the 3x3 stem of small images
    with pytest.raises(CheckpointError, match="conv1.weight"):
        load_start("torchvision:IMAGENET1K_V1", small, "resnet18", tmp_path)


def test_checkpoint_files_in_common_layouts(tmp_path):
    torch.manual_seed(1)
    state = build_model("resnet20", 10).state_dict()
    layouts = {
        "plain.pth": state,
        "ddp.pt": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
        "lowbit.pt": {"main": "student", "nets": {"student": {"model": state, "quant": {}}}},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        got, source = load_start(name, build_model("resnet20", 10), "resnet20", tmp_path)
        assert all(torch.equal(got[k], v) for k, v in state.items()), name
        assert source.startswith(f"{name} (sha256 ")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_start("empty.pt", build_model("resnet20", 10), "resnet20", tmp_path)


PARAMS = {
    "common": {"seed": 0, "dataset": "digits", "batch_size": 64, "workers": 0,
               "loader": "torch", "progress": False, "live_dir": None},
    "prepare": {"image_size": 8},
    # no step moves the weights: lr almost 0, no momentum, no weight decay
    "pretrain": {"epochs": 1, "start": "fp-start.pth",
                 "optim": {"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0,
                           "schedule": "cosine"}},
}  # fmt: skip


def test_a_pretrain_stage_starts_from_its_start_and_records_it(tmp_path):
    torch.manual_seed(3)
    start = build_model("resnet20", 10, 8).state_dict()
    torch.save(start, tmp_path / "fp-start.pth")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    stage_function("prepare")(load_config("prepare", params))
    cfg = load_config("pretrain", params)
    metrics = stage_function("pretrain")(cfg)
    out = cfg.out_dir()
    run = json.loads((out / "run.json").read_text())
    assert run["init"] == metrics["init"] and metrics["init"].startswith("fp-start.pth (sha256 ")
    assert run["config"]["pretrain"]["start"] == "fp-start.pth"  # the report's config table
    trained = torch.load(out / "model.pt", weights_only=True)["nets"]["student"]["model"]
    for k, v in start.items():
        if k.endswith(("weight", "bias")):  # BatchNorm's running statistics do move
            torch.testing.assert_close(trained[k], v, rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_the_imagenet_pipelines_start_from_torchvision_weights(hub, arch):
    params = Path(__file__).resolve().parents[1] / "pipeline" / f"imagenet-{arch}" / "params.yaml"
    cfg = load_config("pretrain", params)
    assert cfg.common.model == arch and cfg.params.start == "torchvision:IMAGENET1K_V1"
    state = _published(hub, arch)
    model = build_model(arch, 1000, yaml.safe_load(params.read_text())["prepare"]["image_size"])
    got, source = load_start(cfg.params.start, model, arch, cfg.base_dir)
    assert torch.equal(got["fc.bias"], state["fc.bias"]) and source.startswith("torchvision:")
