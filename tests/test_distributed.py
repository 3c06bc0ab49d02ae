"""DDP through the engine: 2 CPU processes (gloo) train exactly as 1 process does.

Holds for the same *global* batch (each rank gets half), plain SGD with momentum and
weight decay, and a network without BatchNorm. With BatchNorm the batch statistics are
per rank (B/world samples each) and DDP copies rank 0's running stats to the others, so
results differ from one process; SyncBatchNorm would restore equality on CUDA. The
stages' data loaders take `batch_size` per rank, so a stage's global batch is
batch_size x world.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lowbit import distributed, engine
from tests.slurm.jobs import fit_small


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    env = distributed.DistEnv(rank, rank, world, "127.0.0.1", port)
    with distributed.process_group(env):
        res = fit_small(Path(out) / "state.pt", epochs=2, dtype=torch.float64)
    torch.save(res, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    return fit_small(tmp_path_factory.mktemp("one") / "state.pt", epochs=2, dtype=torch.float64)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_ranks_train_like_one_process(single, two):
    _, (r0, r1) = two
    assert (r0["rank"], r0["world"], r0["ddp"]) == (0, 2, True)
    assert not single["ddp"] and single["world"] == 1
    for k, v in single["state"].items():
        # float64: equal up to the order of additions (float32 drifts to ~1e-4: see fit_small)
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-9, atol=1e-12, msg=k)
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # ranks stay in lockstep


def test_metrics_are_reduced_over_ranks(single, two):
    _, (r0, r1) = two
    for a, b, c in zip(single["history"], r0["history"], r1["history"], strict=True):
        assert b["train_images"] == a["train_images"] == 1344  # 21 global batches of 64
        for key in ("net/train_loss", "net/train_top1", "net/val_loss", "net/val_top1"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-6), key
            assert b[key] == c[key], key  # every rank reports the same reduced numbers
    # the images gained and lost since epoch 1: each rank compares its own shard
    last = single["history"][-1]
    changed = last["net/val_gained"] + last["net/val_lost"]
    assert changed > 0 and "net/val_gained" not in single["history"][0]
    for r in (r0, r1):
        for key in ("net/val_gained", "net/val_lost"):
            assert r["history"][-1][key] == last[key], key


def test_only_rank_0_writes_an_unwrapped_checkpoint(two):
    out, _ = two
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["epoch"] == 1
    keys = list(state["nets"]["net"]["model"])
    assert keys and not any(k.startswith("module.") for k in keys)


def test_one_process_is_not_wrapped():
    assert engine.rank_world() == (0, 1)
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap(net, torch.device("cpu")) is net
    distributed.init(distributed.DistEnv(0, 0, 1, "127.0.0.1", 1))  # a no-op for one task
    assert not torch.distributed.is_initialized()


def test_rank_layout_comes_from_submitits_environment(monkeypatch):
    """A SLURM task's layout: submitit's TorchDistributedEnvironment (the port stable per
    job, MASTER_PORT when set), loopback on one node."""
    from lowbit import launch

    env = {"SLURM_JOB_ID": "123", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
           "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node7",
           "SUBMITIT_EXECUTOR": "slurm"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    a, b = launch.job_dist_env(), launch.job_dist_env()
    assert (a.rank, a.local_rank, a.world_size, a.master_addr) == (1, 1, 2, "127.0.0.1")
    assert a.master_port == b.master_port and 20000 <= a.master_port <= 60000
    monkeypatch.setenv("MASTER_PORT", "29555")
    assert launch.job_dist_env().master_port == 29555
