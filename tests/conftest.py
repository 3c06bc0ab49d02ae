"""Shared fixtures: scikit-learn's bundled digits as small tensors (no download); and, under
pytest-xdist (`make test` runs 2 workers), the cores shared between the workers and the
units of work they share (tests/xdist_groups.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

if TYPE_CHECKING:
    from xdist.remote import Producer

    from tests.xdist_groups import GroupScheduling


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker: torch, and every process a test starts (stages, DVC, SLURM
    jobs inherit the environment), gets its share of the cores. Two workers at torch's
    default of one thread per core would put 4 threads on 2 cores, and OpenMP's spinning
    barriers slow a step by 10x and more when its threads wait for a core."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    from lowbit.data.cpus import available_cpus

    threads = str(max(1, available_cpus()[0] // int(workers)))
    os.environ.setdefault("OMP_NUM_THREADS", threads)  # a user's own choice is kept
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> GroupScheduling | None:
    """Under `-n N` (plain load balancing), tests/xdist_groups.py's units: the SLURM tests
    on one worker, modules with a costly module fixture on one worker each."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from tests.xdist_groups import GroupScheduling

    return GroupScheduling(config, log)


class EpochLoader:
    """A DataLoader whose shuffle order is a function of (seed, epoch)."""

    def __init__(self, ds: TensorDataset, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.g = torch.Generator()
        self.seed = seed
        self.loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=self.g)

    def set_epoch(self, epoch: int) -> None:
        self.g.manual_seed(self.seed * 7919 + epoch)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def digits_tensors(size: int = 16):
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - 0.3) / 0.35).repeat(1, 3, 1, 1)  # (N, 3, size, size), roughly standardised
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.fixture(scope="session")
def digits():
    (xt, yt), (xv, yv) = digits_tensors()
    train = EpochLoader(TensorDataset(xt, yt), 64, shuffle=True)
    val = EpochLoader(TensorDataset(xv, yv), 200, shuffle=False)
    return train, val


@pytest.fixture
def fresh_dynamo():
    """dynamo's caches and recompile counters emptied before and after the test."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
