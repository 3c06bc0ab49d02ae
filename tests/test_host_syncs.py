"""No host sync per training step: on a GPU every `float(t)`, `int(t)`, `bool(t)` or
`t.item()` of a device tensor stalls the stream until the device catches up. Counted on
the CPU (the same code runs on CUDA): reads happen once per epoch, not once per step."""

from __future__ import annotations

import pytest
import torch

from lowbit import engine
from lowbit.methods.joint_distill import JointDistillation
from lowbit.methods.stochastic_precision import StochasticPrecision
from lowbit.models import build_model
from lowbit.quant import quantize

CPU = torch.device("cpu")
READS = ("__float__", "__int__", "__bool__", "item")


class _Counter:
    def __init__(self, monkeypatch) -> None:
        self.n = 0
        for name in READS:
            real = getattr(torch.Tensor, name)

            def wrapped(t, *a, _real=real, **k):
                self.n += 1
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)


class _Batches:
    def __init__(self, steps: int) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(steps, 8, 3, 16, 16, generator=g)  # (steps, N, C, H, W)
        y = torch.randint(0, 10, (steps, 8), generator=g)
        self.data = list(zip(x, y, strict=True))

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data)


def _fit(tmp_path, quantizer: str, steps: int, sp: str | None, kd: bool, monkeypatch) -> int:
    torch.manual_seed(0)
    nets = {"net": quantize(build_model("resnet20", 10, 16), 2, 2, quantizer=quantizer)}
    if kd:
        nets["teacher"] = build_model("resnet20", 10, 16)
    trainees = [engine.make_trainee(n, m, engine.OptimSpec(lr=0.01), CPU) for n, m in nets.items()]
    hooks = [StochasticPrecision(nets["net"], selection=sp, seed=0)] if sp else []
    objective = JointDistillation() if kd else None
    val = _Batches(1)
    # the first step initialises LSQ's steps and builds kernels: not counted
    warm = engine.FitSpec(1, 0, CPU, tmp_path / f"w{steps}.pt", progress=False)
    engine.fit(trainees, _Batches(1), val, warm, objective, hooks)
    counter = _Counter(monkeypatch)
    spec = engine.FitSpec(1, 0, CPU, tmp_path / f"c{steps}.pt", progress=False)
    engine.fit(trainees, _Batches(steps), val, spec, objective, hooks)
    monkeypatch.undo()
    return counter.n


@pytest.mark.parametrize(
    "quantizer,sp,kd",
    [
        ("dorefa", None, False),
        ("lsq", None, False),
        ("pact", "error", False),
        ("dorefa", None, True),
    ],
    ids=["dorefa", "lsq", "sp-error", "kd"],
)
def test_reads_per_epoch_do_not_grow_with_the_steps(tmp_path, monkeypatch, quantizer, sp, kd):
    few = _fit(tmp_path, quantizer, 2, sp, kd, monkeypatch)
    many = _fit(tmp_path, quantizer, 6, sp, kd, monkeypatch)
    assert many == few, (few, many)  # a per-step read would add 4 x (reads per step)
