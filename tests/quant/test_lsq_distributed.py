"""LSQ's data-dependent step initialisation (LSQ §2.1) across DDP ranks, and the Python
flag that keeps the forward from reading the `initialized` buffer.

Two gloo ranks on localhost, each feeding a different first batch, must end with the
same step: the mean over ranks of the steps each would have chosen alone.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from torch import distributed as dist
from torch import multiprocessing as mp

from lowbit.quant.quantizers import LSQActivation, LSQWeight

WORLD = 2
CASES = {"act2": (LSQActivation, 2), "act4": (LSQActivation, 4), "weight3": (LSQWeight, 3)}


def first_batch(rank: int) -> torch.Tensor:
    """Rank-specific data: (64, 8, 4, 4) with a scale that differs per rank."""
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(64, 8, 4, 4, generator=g) * (1.0 + rank)


def steps_after_first_batch(rank: int) -> dict[str, torch.Tensor]:
    """Each case's step after one training forward on rank `rank`'s first batch."""
    steps = {}
    for name, (cls, bits) in CASES.items():
        q = cls(bits).train()
        q(first_batch(rank))
        steps[name] = q.step.detach().clone()
    return steps


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        torch.save(steps_after_first_batch(rank), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_ranks_start_from_the_mean_step(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    alone = [steps_after_first_batch(r) for r in range(WORLD)]  # no process group
    for name in CASES:
        assert alone[0][name] != alone[1][name]  # the batches really disagree
        expected = (alone[0][name] + alone[1][name]) / WORLD  # float32, as all_reduce sums
        assert torch.equal(got[0][name], got[1][name]), name
        assert torch.equal(got[0][name], expected), name


def test_forward_reads_no_tensor_after_init(monkeypatch):
    q = LSQActivation(2).train()
    x = first_batch(0)
    q(x)  # the first training batch initialises the step

    def boom(self: torch.Tensor) -> bool:
        raise AssertionError("a tensor was read on the host in forward")

    monkeypatch.setattr(torch.Tensor, "__bool__", boom)
    q(x)
    q.eval()(x)


def test_flag_follows_the_loaded_state_dict():
    trained = LSQWeight(4).train()
    trained(first_batch(1))
    fresh = LSQWeight(4).train()
    fresh.load_state_dict(trained.state_dict())
    fresh(first_batch(0))  # loaded as initialised: the data must not re-initialise it
    assert torch.equal(fresh.step, trained.step)
    fresh.load_state_dict(LSQWeight(4).state_dict())  # uninitialised again
    fresh(first_batch(0))  # so this batch sets the step
    alone = LSQWeight(4).train()
    alone(first_batch(0))
    assert torch.equal(fresh.step, alone.step) and not torch.equal(fresh.step, trained.step)
