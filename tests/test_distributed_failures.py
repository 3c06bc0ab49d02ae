"""Several ranks decide together (gloo stands in for NCCL: no GPU here): a non-finite loss
on one rank stops every rank at once, a lock rank 0 cannot take stops every rank, and
validation over ranks counts each image once (no padded duplicates)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from lowbit import distributed, engine
from lowbit.data import build_loaders
from lowbit.errors import ConfigError, TrainingError

CPU = torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Batches:
    """Eight batches of 4; on `nan_rank`, the inputs of batch 3 are NaN."""

    def __init__(self, rank: int, nan_rank: int) -> None:
        g = torch.Generator().manual_seed(rank)
        self.data = [(torch.randn(4, 3, generator=g), torch.randint(0, 2, (4,), generator=g))
                     for _ in range(8)]  # fmt: skip
        if rank == nan_rank:
            self.data[3][0].fill_(float("nan"))

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data)


def _nan_worker(rank: int, world: int, port: int, out: str) -> None:
    env = distributed.DistEnv(rank, rank, world, "127.0.0.1", port)
    with distributed.process_group(env):
        torch.manual_seed(0)
        t = engine.make_trainee("net", nn.Linear(3, 2), engine.OptimSpec(lr=0.1), CPU)
        spec = engine.FitSpec(2, 0, CPU, Path(out) / "c.pt", progress=False)
        t0 = time.time()
        try:
            engine.fit([t], _Batches(rank, nan_rank=1), _Batches(rank, -1), spec)
            result = "finished"
        except TrainingError as e:
            result = f"raised: {e}"
        Path(out, f"rank{rank}.txt").write_text(f"{result}\n{time.time() - t0:.1f}")


def test_nan_on_one_rank_stops_every_rank_within_seconds(tmp_path):
    mp.spawn(_nan_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        result, seconds = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert result.startswith("raised: non-finite loss for net in epoch 1"), (rank, result)
        assert float(seconds) < 60, (rank, seconds)  # not the 600 s collective timeout


def _lock_worker(rank: int, world: int, port: int, out: str) -> None:
    from lowbit.training.run import _rank0_lock

    env = distributed.DistEnv(rank, rank, world, "127.0.0.1", port)
    with distributed.process_group(env):
        lock = Path(out) / "held.lock"
        try:
            with _rank0_lock(Path(out) / "runs", lock, rank == 0):
                result = "entered"
        except ConfigError as e:
            result = f"raised: {e}"
        Path(out, f"rank{rank}.txt").write_text(result)


def test_a_lock_rank_0_cannot_take_stops_every_rank(tmp_path):
    import fcntl
    import os

    fd = os.open(tmp_path / "held.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another stage is writing there
    try:
        mp.spawn(_lock_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    finally:
        os.close(fd)
    r0, r1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert r0.startswith("raised:") and "being written by another running stage" in r0
    assert r1.startswith("raised:") and "could not lock" in r1


def _val_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    env = distributed.DistEnv(rank, rank, world, "127.0.0.1", port)
    with distributed.process_group(env):
        _, val = build_loaders(Path(data), 8, workers=0, backend="torch", distributed=True)
        ids = sum(len(y) for _, y in val)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        res = engine.evaluate(model, val, CPU)
        Path(out, f"rank{rank}.txt").write_text(f"{ids} {res['top1']!r} {res['loss']!r}")


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory) -> Path:
    """CIFAR-10 pickles with 8 training and 7 test images per file: 7 = 2 * 3 + 1."""
    from lowbit.data import prepare_dataset
    from tests.data.conftest import write_cifar10

    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root / "src", per_batch=8, test=7)
    prepare_dataset("cifar10", root / "src", root / "data", image_size=32, seed=0)
    return root / "data"


def test_validation_over_three_ranks_counts_each_image_once(digits_data, tmp_path):
    _, val = build_loaders(digits_data, 8, workers=0, backend="torch")
    n = sum(len(y) for _, y in val)
    assert n % 3 != 0  # the shards cannot be equal: DistributedSampler would pad one
    torch.manual_seed(0)
    ref = engine.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), val, CPU)
    mp.spawn(_val_worker, args=(3, _free_port(), str(digits_data), str(tmp_path)), nprocs=3)
    rows = [(tmp_path / f"rank{r}.txt").read_text().split() for r in range(3)]
    assert sum(int(r[0]) for r in rows) == n  # no padded duplicates
    for _, top1, loss in rows:
        assert float(top1) == pytest.approx(ref["top1"], abs=1e-9)
        assert float(loss) == pytest.approx(ref["loss"], rel=1e-6)
    assert np.isclose(float(rows[0][1]), float(rows[2][1]))
