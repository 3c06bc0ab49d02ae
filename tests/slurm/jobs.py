"""Small, picklable stage functions the launch tests submit as jobs.

A job process imports this module by name (tests.slurm.jobs), so everything here is
module-level and light. Each function takes a StageConfig like a stage's `run`.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit import engine

CPU = torch.device("cpu")


def echo(cfg: Any) -> dict[str, Any]:
    """Say where it ran; the round-trip job."""
    return {
        "stage": cfg.stage,
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "executor": os.environ.get("SUBMITIT_EXECUTOR"),
        "value": 42.0,
    }


def fail(cfg: Any) -> dict[str, Any]:
    print("about to fail", flush=True)
    raise ValueError(f"boom from the {cfg.stage} job")


def sleep_long(cfg: Any) -> dict[str, Any]:
    print("sleeping", flush=True)
    time.sleep(300)
    return {}


def small_net(seed: int = 0) -> nn.Module:
    """A conv net without BatchNorm, so DDP and one process compute the same updates."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def toy_data(n_train: int = 1344, n_val: int = 396) -> tuple[tuple[torch.Tensor, ...], ...]:
    """(N, 3, 8, 8) images whose class (of 10) a fixed random linear map decides:
    learnable, deterministic, and quick to make (no dataset import in every job)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 3, 8, 8, generator=g)
    w = torch.randn(3 * 8 * 8, 10, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


class ShardLoader:
    """Global batches of `batch` samples in a (seed, epoch) order; each rank gets its
    contiguous share (batch / world), so the ranks together see exactly one process's
    batch. Partial last batches are dropped."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, shuffle: bool) -> None:
        self.x, self.y, self.batch, self.shuffle, self.epoch = x, y, batch, shuffle, 0
        self.rank, self.world = engine.rank_world()
        if batch % self.world:
            raise ValueError(f"global batch {batch} not divisible by world {self.world}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.y) // self.batch

    def __iter__(self):
        n = len(self.y)
        order = (
            torch.randperm(n, generator=torch.Generator().manual_seed(1000 + self.epoch))
            if self.shuffle
            else torch.arange(n)
        )
        share = self.batch // self.world
        for i in range(len(self)):
            idx = order[i * self.batch : (i + 1) * self.batch]
            idx = idx[self.rank * share : (self.rank + 1) * share]
            yield self.x[idx], self.y[idx]


def fit_small(
    ckpt: Path,
    epochs: int = 2,
    batch: int = 64,
    sleep_s: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Train small_net on toy_data through the engine (DDP when several ranks).

    Returns the final weights, the history and a digest of the weights. sleep_s per
    epoch makes a run long enough for a signal to land in the middle of it. In float64
    DDP and one process agree to ~1e-16; in float32 the different order of additions
    (per-rank conv reductions, then the all-reduce) grows to ~1e-4 over 40 steps.
    """
    torch.set_num_threads(1)  # the same arithmetic in every process
    (xt, yt), (xv, yv) = (
        tuple(t.to(dtype) if t.is_floating_point() else t for t in s) for s in toy_data()
    )
    net = small_net().to(dtype)
    t = engine.make_trainee("net", net, engine.OptimSpec(lr=0.2, milestones=(3,)), CPU)
    train = ShardLoader(xt, yt, batch, shuffle=True)
    val = ShardLoader(xv, yv, 66 * engine.rank_world()[1], shuffle=False)

    def on_epoch_end(row: dict[str, float]) -> None:
        if engine.rank_world()[0] == 0:
            with (ckpt.parent / "epochs.log").open("a") as f:
                f.write(f"{int(row['epoch'])} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        time.sleep(sleep_s)

    # compare_after=1: later epochs count the validation images gained and lost since
    # epoch 1, each rank on its own shard, summed over ranks (the reference is resumed)
    spec = engine.FitSpec(
        epochs, 0, CPU, ckpt, progress=False, on_epoch_end=on_epoch_end, compare_after=1
    )
    hist = engine.fit([t], train, val, spec)
    state = {k: v.detach().clone() for k, v in engine.unwrap(t.model).state_dict().items()}
    blob = b"".join(v.numpy().tobytes() for v in state.values())
    return {
        "rank": engine.rank_world()[0],
        "world": engine.rank_world()[1],
        "ddp": isinstance(t.model, nn.parallel.DistributedDataParallel),
        "state": state,
        "history": hist.epochs,
        "digest": hashlib.sha256(blob).hexdigest(),
    }


@dataclass
class SmallFit:
    """fit_small as a stage function: its checkpoint under the stage's runs dir."""

    epochs: int = 2
    batch: int = 64
    sleep_s: float = 0.0
    dtype: str = "float32"

    def __call__(self, cfg: Any) -> dict:
        ckpt = cfg.runs_dir / ".resume" / "small" / "state.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if engine.rank_world()[0] == 0:
            with (ckpt.parent / "starts.log").open("a") as f:
                f.write(f"{os.environ.get('SLURM_JOB_ID')} {time.time():.1f}\n")
        return fit_small(ckpt, self.epochs, self.batch, self.sleep_s, getattr(torch, self.dtype))
