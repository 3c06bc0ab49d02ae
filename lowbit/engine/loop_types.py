"""What fit() is told (FitSpec) and what it returns (History)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lowbit.engine.steps import Execution


@dataclass
class FitSpec:
    epochs: int
    seed: int
    device: torch.device
    checkpoint: Path  # resumable state, rewritten atomically after every epoch
    fingerprint: str = ""  # a checkpoint with another fingerprint is not resumed
    progress: bool = True
    # Called with each trained epoch's history row, in order.
    on_epoch_end: Callable[[dict[str, float]], None] | None = None
    # Called once at the start with the rows a resumed checkpoint restores ([] if none):
    # with on_epoch_end, a log built from both equals an uninterrupted run's.
    on_resume: Callable[[list[dict[str, float]]], None] | None = None
    # Evaluate after every k-th epoch, after the epochs in eval_at (1-based) and always
    # after the last; the skipped epochs' validation metrics are NaN (a CPU budget saver
    # for large validation sets).
    eval_every: int = 1
    eval_at: tuple[int, ...] = ()
    # Later evaluations count, per image, the top-1 answers gained and lost since the one
    # after this 1-based epoch ("<net>/val_gained", "<net>/val_lost"; 0: none): the
    # convergence check's McNemar test. The epoch must be one that evaluates.
    compare_after: int = 0
    # The loader's epoch index of this round's first epoch: the epochs the run's init
    # chain (earlier stages and rounds) has already drawn.
    data_offset: int = 0
    execution: Execution = field(default_factory=Execution)  # layout, precision
    # Held-out test images, evaluated whenever validation runs ("<net>/test_top1", ...):
    # reported at the epoch validation chooses, never used to choose it.
    test_loader: Any = None


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    images: int = 0
    cpu_s: float = 0.0  # CPU seconds of this process (all threads): immune to pauses
    # per network, every rank's (N_rank,) bool top-1 answers after spec.compare_after
    reference: dict[str, list[Tensor]] = field(default_factory=dict)


# Every random stream of a run is seeded by derived_seed(seed, k), k an epoch or a step:
# a prime stride, so the streams of consecutive seeds never meet for k < SEED_STRIDE (FFCV's
# orders draw from seed + epoch; without the stride seed 1 would replay seed 0's epochs).
SEED_STRIDE = 1_000_003


def derived_seed(seed: int, k: int = 0, modulus: int = 2**31 - 1) -> int:
    """The seed of stream `k` of a run seeded `seed`, below `modulus` (what the consumer
    accepts: 2**31 - 1 for numpy, 2**32 for the loaders, 2**63 - 1 for torch.Generator)."""
    return (seed * SEED_STRIDE + k) % modulus


def seed_everything(seed: int, epoch: int = 0) -> None:
    """Seed torch, numpy and random from (seed, epoch)."""
    s = derived_seed(seed, epoch)
    random.seed(s)
    torch.manual_seed(s)
    try:
        import numpy as np

        np.random.seed(s)
    except ImportError:  # pragma: no cover
        pass
