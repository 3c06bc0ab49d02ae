"""Where a full-precision network starts when `pretrain.start` names published weights.

The paper quantizes networks that start from a trained full-precision model; on
ImageNet that model is a published one, not 90 epochs of a user's GPUs. `start` is

    torchvision:<NAME>   torchvision's weights of the stage's model (IMAGENET1K_V1,
                         IMAGENET1K_V2, DEFAULT, ...), read from the torch hub cache
                         ($TORCH_HOME/hub/checkpoints, where torchvision downloads to):
                         lowbit never downloads, so a compute node needs no internet
    <path>               any checkpoint file (relative to params.yaml): a state dict, a
                         dict holding one under "state_dict" or "model", or a lowbit
                         model.pt; DDP's "module." prefixes are dropped

Files load with weights_only=True. The state dict must fit the stage's model key for key
and shape for shape (a 1000-class fc needs 1000 classes, torchvision's 7x7 stem needs
images above 64 pixels). The returned source names the weights, the file and its
sha256, and travels into metrics.json and run.json ("init").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lowbit.errors import CheckpointError, ConfigError

TORCHVISION = "torchvision:"


def load_start(start: str, model: nn.Module, arch: str, base_dir: Path) -> tuple[dict, str]:
    """(state dict that fits `model`, source) for `pretrain.start`; one-line errors."""
    if start.startswith(TORCHVISION):
        path, what = torchvision_file(arch, start[len(TORCHVISION) :])
    else:
        path = Path(start) if Path(start).is_absolute() else base_dir / start
        if not path.is_file():
            raise ConfigError(f"pretrain.start: checkpoint file {path} not found")
        what = os.path.relpath(path, base_dir)
    state = state_dict_of(_load(path), path)
    check_fits(state, model, path)
    return state, f"{what} (sha256 {_sha256(path)[:16]})"


def torchvision_file(arch: str, name: str) -> tuple[Path, str]:
    """(the cached file of torchvision's `name` weights of `arch`, their full name)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise ConfigError(f"pretrain.start: torchvision publishes no weights for {arch}") from None
    names = [w.name for w in enum]
    if name not in names and name != "DEFAULT":
        raise ConfigError(
            f"pretrain.start: {arch} has no torchvision weights {name!r}; "
            f"choose one of {', '.join(['DEFAULT', *names])}"
        )
    weights = enum[name] if name != "DEFAULT" else enum.DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / os.path.basename(weights.url)
    if not path.is_file():
        raise ConfigError(
            f"pretrain.start: {path.name} ({weights}) is not in {cache} (torchvision's "
            f"cache, $TORCH_HOME/hub/checkpoints); download {weights.url} there on a machine "
            "with internet, or set pretrain.start to a checkpoint file"
        )
    return path, f"torchvision:{weights} ({path.name})"


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or non-tensor pickle: name the file, one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"pretrain.start: cannot load {path}: {msg}") from None


def state_dict_of(obj: Any, path: Path) -> dict[str, Tensor]:
    """The network's state dict inside a checkpoint, without DDP's "module." prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("nets"), dict) and "main" in obj:
        obj = obj["nets"][obj["main"]].get("model")  # lowbit's model.pt
    elif isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"pretrain.start: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_fits(state: dict[str, Tensor], model: nn.Module, path: Path) -> None:
    """Every key of `model`'s state dict, with its shape, and no other key."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or shapes:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("shape", shapes))
            if keys
        )
        raise CheckpointError(f"pretrain.start: {path} does not fit the model ({detail})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
