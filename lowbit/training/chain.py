"""Where a stage's networks come from: its device, its data, the chain of earlier stages
it starts from (`init`), and quantized networks holding their parameters.

A stage's network starts from the final network of its `init` stage (FP pretraining, or
an earlier quantized stage), read from runs/<stage>/<slug>/model.pt (lowbit.identity).
The chain's cost (network-epochs and seconds after FP pretraining) and its data stream
position travel with it, so a result reports what its whole chain cost and no epoch is replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lowbit import checkpoint, distributed, engine
from lowbit.config import StageConfig
from lowbit.errors import CheckpointError, ConfigError
from lowbit.identity import RunId
from lowbit.models import build_model
from lowbit.quant.convert import clipped_float, load_float_state_dict, quantize


def device_of(cfg: StageConfig) -> torch.device:
    """The stage's device. With several ranks each rank trains on its own GPU (the one
    distributed.init selected), whatever index common.device names."""
    want = cfg.common.device
    dev = (
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if want == "auto"
        else torch.device(want)
    )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"common.device is {want!r} but no CUDA device is available")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv
        if engine.rank_world()[1] > 1:
            return torch.device("cuda", torch.cuda.current_device())
        distributed.bind(dev)  # cuda:N: this process's current device, too
    return dev


def load_data(cfg: StageConfig, device: torch.device) -> tuple[Any, Any, Any, Any]:
    """(train loader, val loader, test loader or None, dataset meta) from the prepare
    stage's output; the test loader exists when prepare held validation images out."""
    from lowbit.data import DatasetMeta, build_loaders
    from lowbit.data.loaders import LoaderOptions, build_eval_loader

    meta_path = cfg.data_dir / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(
            f"input stage 'prepare' has not run: {meta_path} not found "
            "(run `lowbit stage prepare` first)"
        )
    meta = DatasetMeta.load(cfg.data_dir)
    world = engine.rank_world()[1]
    options = LoaderOptions(
        workers=cfg.common.workers,
        device=device,
        seed=engine.derived_seed(cfg.common.seed, 0, 2**32),  # epoch e: seed + e
        augment=cfg.common.augment,
        backend=cfg.common.loader,
        distributed=world > 1,
    )
    batch = cfg.common.batch_size
    train, val = build_loaders(cfg.data_dir, batch, options)
    return train, val, build_eval_loader(cfg.data_dir, "test", batch, options), meta


def arch_of(cfg: StageConfig, meta: Any) -> dict[str, Any]:
    return {
        "model": cfg.common.model,
        "num_classes": int(meta.num_classes),
        "image_size": int(meta.image_size),
        "quantizer": cfg.common.quantizer,
        "block_output": cfg.common.block_output,
        "fp_start": cfg.common.fp_start,
    }


def fresh_fp(arch: dict[str, Any]) -> nn.Module:
    return build_model(arch["model"], arch["num_classes"], arch["image_size"])


def fp_net(arch: dict[str, Any]) -> nn.Module:
    """The full-precision network of the run's FP start (common.fp_start): the plain
    float network, or the one clipped like the quantizers (float weights)."""
    model = fresh_fp(arch)
    if arch.get("fp_start", "relu") == "clip":
        return clipped_float(model, arch.get("block_output", "quantized"))
    return model


@dataclass
class Init:
    """Where a stage's network starts: the state dict and the chain that produced it."""

    state: dict[str, torch.Tensor] | None  # None: from scratch
    method: str = ""  # method label of the init stage ("" for FP / scratch)
    budget_epochs: float = 0.0  # network-epochs spent on the init (FP pretraining excluded)
    source: str = "scratch"
    cost_s: float = 0.0  # training seconds spent on the init (FP pretraining excluded)
    cost_cpu_s: float = 0.0  # the same in CPU seconds (all threads)
    # Loader epochs the init chain has drawn (FP pretraining included): this stage's data
    # stream continues from there, so no epoch of the chain is replayed.
    data_epochs: int = 0
    # sha256 of the init's model.pt: a round checkpoint resumes only onto the same start
    digest: str = ""


def read_output(cfg: StageConfig, run: RunId, arch: dict[str, Any]) -> Init:
    """The final network of an earlier run; clear errors if missing or incompatible."""
    stage, out = run.stage, cfg.out_dir(run)
    path = out / "model.pt"
    if not path.is_file():
        command = run.command(cfg.params_file, cfg.common_sets)
        raise ConfigError(
            f"input stage {stage!r} has not run: {path} not found (run `{command}` first)"
        )
    state = checkpoint.load(path)
    saved = state.get("arch", {})
    for key in ("model", "num_classes"):
        if saved.get(key) != arch[key]:
            raise CheckpointError(
                f"{path} was trained for {key}={saved.get(key)!r}, this stage needs {arch[key]!r}"
            )
    net = state["nets"][state["main"]]
    metrics = (
        json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    )
    fp = run.fp
    method = "" if fp else str(metrics.get("method", stage))
    budget = 0.0 if fp else float(metrics.get("budget_epochs", 0.0))
    cost = 0.0 if fp else float(metrics.get("cost_s", metrics.get("wall_s", 0.0)))
    cpu = 0.0 if fp else float(metrics.get("cost_cpu_s", 0.0))
    data = int(metrics.get("data_epochs", metrics.get("epochs", 0)))
    # relative to params.yaml's folder: results stay comparable when a repo moves
    source = os.path.relpath(path, cfg.base_dir)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Init(dict(net["model"]), method, budget, source, cost, cpu, data, digest)


def student_init(cfg: StageConfig, arch: dict[str, Any]) -> Init:
    run = cfg.init_run
    return Init(None) if run is None else read_output(cfg, run, arch)


def quantized_from(init: Init, arch: dict[str, Any], w_bits: int, a_bits: int) -> nn.Module:
    """A quantized network at (w_bits, a_bits) holding `init`'s parameters."""
    model = quantize(
        fresh_fp(arch),
        w_bits,
        a_bits,
        quantizer=arch["quantizer"],
        block_output=arch.get("block_output", "fp"),
    )
    if init.state is not None:
        load_float_state_dict(model, init.state)
    return model
