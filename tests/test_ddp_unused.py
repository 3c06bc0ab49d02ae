"""DDP over rounds whose quantizers leave learned parameters out of the forward.

Two gloo ranks on the CPU (no GPU needed): TS stage 1 (`quantize-weights`) trains with
32-bit activations, where LSQ's activation step takes no part in the forward, and with
`a_mode: relu` the activation quantizers are off, so PACT's alpha and LSQ's step get no
gradient. DDP must know (find_unused_parameters), or its second step fails with
"Expected to have finished reduction in the prior iteration". A round that uses every
parameter again (TS stage 2 in the same process group) re-wraps without the extra walk.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lowbit import distributed, engine
from lowbit.methods.two_stage import activations_round, weights_round
from tests.tiny import tiny_w2a2

CPU = torch.device("cpu")
CASES = {"lsq-clip": ("lsq", "clip"), "lsq-relu": ("lsq", "relu"), "pact-relu": ("pact", "relu")}


def _batches(rank: int, steps: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(10 + rank)  # each rank its own shard
    return [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(steps)]  # fmt: skip


def _train(quantizer: str, a_mode: str, rank: int, work: Path) -> dict[str, torch.Tensor]:
    model = tiny_w2a2(quantizer)
    val = _batches(99, 1)
    for i, rnd in enumerate([weights_round(2, 1, a_mode), activations_round(2, 2, 1)]):
        rnd.apply(model)
        t = engine.make_trainee("net", model, engine.OptimSpec(lr=0.05), CPU)
        ckpt = work / f"{quantizer}-{a_mode}-round{i}.pt"
        spec = engine.FitSpec(1, 0, CPU, ckpt, progress=False)
        engine.fit([t], _batches(rank), val, spec)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    env = distributed.DistEnv(rank, rank, 2, "127.0.0.1", port)
    with distributed.process_group(env):
        states = {name: _train(q, mode, rank, Path(out)) for name, (q, mode) in CASES.items()}
    torch.save(states, Path(out) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_rounds_with_unused_quantizer_parameters_train_in_lockstep(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for name in CASES:
        for k, v in r0[name].items():
            if "running_" in k or "num_batches" in k:
                continue  # BatchNorm statistics are per rank (evaluation uses rank 0's)
            assert torch.equal(v, r1[name][k]), (name, k)
        # the activation parameters trained in round 2, where they are used
        fresh = tiny_w2a2(CASES[name][0]).state_dict()
        learned = [k for k in r0[name] if k.endswith(("a_quant.step", "a_quant.alpha"))]
        assert learned and any(not torch.equal(r0[name][k], fresh[k]) for k in learned), name
