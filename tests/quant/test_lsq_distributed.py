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


def _compiled_worker(rank: int, port: int, out: str) -> None:
    """The first training forward of a network, eager and compiled, in one process
    group: compiled, the steps' all-reduce runs inside the graph (copy, fill and
    all-reduce traced by dynamo)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        runs = {mode: _net_steps(rank, mode == "compiled") for mode in ("eager", "compiled")}
        torch.save(runs, Path(out) / f"net{rank}.pt")
    finally:
        dist.destroy_process_group()


def _net_steps(rank: int, compiled: bool) -> dict[str, torch.Tensor]:
    from torch import nn

    from lowbit.quant import quantize

    torch.manual_seed(0)
    fp = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    model = quantize(fp, 2, 2, quantizer="lsq").train()
    run = torch.compile(model, backend="inductor") if compiled else model
    run(first_batch(rank)).sum().backward()
    assert all(q._initialized for q in model.modules() if hasattr(q, "_initialized"))
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("step")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compiled_ranks_start_from_the_eager_ranks_step(tmp_path):
    mp.spawn(_compiled_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"net{r}.pt") for r in range(WORLD))
    alone = [_net_steps(r, compiled=False) for r in range(WORLD)]  # no process group
    assert len(r0["compiled"]) == 4  # the 2nd and 3rd convs: weight and input steps
    assert alone[0]["2.a_quant.step"] != alone[1]["2.a_quant.step"]  # the batches differ
    for name, step in r0["compiled"].items():
        assert torch.equal(step, r1["compiled"][name]), name  # one value on every rank
        assert torch.equal(r0["eager"][name], r1["eager"][name]), name
        # the per-rank means are sums in another order in the compiled kernels
        torch.testing.assert_close(step, r0["eager"][name], rtol=1e-5, atol=0, msg=name)
    mean = (alone[0]["2.a_quant.step"] + alone[1]["2.a_quant.step"]) / WORLD
    torch.testing.assert_close(r0["compiled"]["2.a_quant.step"], mean, rtol=1e-5, atol=0)
