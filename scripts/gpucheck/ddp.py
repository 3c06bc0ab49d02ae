"""Step `ddp`: two ranks train through lowbit's engine (DistributedDataParallel), each on
batches of its own, and must hold equal parameters afterwards (BatchNorm's running
statistics stay per rank by design and are left out), for DoReFa W2A2, LSQ W2A2 (its
steps set from each rank's first batch, then averaged), stochastic precision (some
quantizers off per step: find_unused_parameters) and joint KD (student and teacher).

With two or more GPUs the ranks take one each over NCCL; with one, both ranks share it
over gloo on CUDA tensors (NCCL refuses two ranks on one device); on the CPU, gloo.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from gpucheck.record import Record

CASES = ("dorefa", "lsq", "sp", "kd")


def run(rec: Record, s: dict) -> None:
    gpus = torch.cuda.device_count() if s["device"] == "cuda" else 0
    layout = (
        "nccl, one GPU per rank"
        if gpus > 1
        else ("gloo on CUDA tensors, both ranks on GPU 0" if gpus == 1 else "gloo on the CPU")
    )
    rec.info(layout=layout)
    out = Path(s["work"]) / "ddp"
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank, args=(s, str(out), _port()), nprocs=2, join=True)
    for case in CASES:
        r = [json.loads((out / f"{case}-rank{k}.json").read_text()) for k in range(2)]
        d = max(abs(a - b) for a, b in zip(r[0]["params"], r[1]["params"], strict=True))
        numbers = {
            "max_checksum_diff": d,
            "loss": r[0]["loss"],
            "tensors": len(r[0]["params"]),
            "world": r[0]["world"],
            "backend": r[0]["backend"],
        }
        ok = d == 0.0 and r[0]["world"] == 2 and all(map(_finite, r[0]["loss"]))
        rec.check(f"DDP {case}: parameters equal on both ranks ({layout})", ok, numbers)


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, s: dict, out: str, port: int) -> None:
    from lowbit import distributed

    gpus = torch.cuda.device_count() if s["device"] == "cuda" else 0
    dev = torch.device("cuda", rank % gpus) if gpus else torch.device("cpu")
    distributed.bind(dev)
    env = distributed.DistEnv(rank, rank, 2, "127.0.0.1", port)
    # distributed.backend picks nccl on a GPU node; two ranks on one GPU need gloo
    with distributed.process_group(env, "cpu" if gpus < 2 else "auto"):
        for case in CASES:
            result = _train(case, rank, dev, s["sizes"]["ddp"], Path(out))
            Path(out, f"{case}-rank{rank}.json").write_text(json.dumps(result))


def _train(case: str, rank: int, dev: torch.device, p: dict, out: Path) -> dict:
    import torch.distributed as dist

    from lowbit import engine
    from lowbit.methods.joint_distill import JointDistillation
    from lowbit.methods.stochastic_precision import StochasticPrecision
    from lowbit.models import build_model
    from lowbit.quant import quantize

    torch.manual_seed(0)
    nets = {
        "student": quantize(
            build_model("resnet20", 10), 2, 2, quantizer="lsq" if case == "lsq" else "dorefa"
        )
    }
    if case == "kd":
        nets["teacher"] = build_model("resnet20", 10)
    hooks = [StochasticPrecision(nets["student"], seed=0)] if case == "sp" else []
    ex = engine.Execution(channels_last=True, leaves_unused=case == "sp")
    ts = [engine.make_trainee(n, m, engine.OptimSpec(lr=0.05), dev, ex) for n, m in nets.items()]
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    data = [
        (
            torch.randn(p["batch"], 3, 32, 32, generator=g),
            torch.randint(0, 10, (p["batch"],), generator=g),
        )
        for _ in range(p["steps"])
    ]
    spec = engine.FitSpec(1, 0, dev, out / f"{case}.pt", progress=False, execution=ex)
    hist = engine.fit(
        ts, data, data[:1], spec, JointDistillation() if case == "kd" else None, hooks
    )
    params = [float(p.detach().double().sum()) for m in nets.values() for p in m.parameters()]
    params += [
        float(p.detach().double().abs().sum()) for m in nets.values() for p in m.parameters()
    ]
    return {
        "params": params,
        "loss": [r["student/train_loss"] for r in hist.epochs],
        "world": dist.get_world_size(),
        "backend": dist.get_backend(),
    }
