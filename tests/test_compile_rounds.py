"""torch.compile (inductor, on the CPU) through the engine over multi-round stages, LSQ's
first-batch initialisation and KD's hint hooks.

`model.compile()` compiles one shared code object (nn.Module's call), and dynamo keeps at
most `recompile_limit` (8) graphs of it; past that it runs the frame uncompiled, with
one warning. Bit decay over [16, 8, 4, 2] makes a few graphs per round (a training step
per batch shape, the evaluation), so its last rounds would silently train eagerly.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from lowbit import engine
from lowbit.methods import decay_rounds
from lowbit.methods.joint_distill import JointDistillation, KDWeights
from lowbit.quant import quantize

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # tests/conftest.py


def _fp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


def _data(n: int, seed: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_bit_decay_round_runs_compiled(tmp_path, caplog):
    model = quantize(_fp(), 16, 16)
    train, val = _data(10, 1, 4), _data(4, 2, 4)  # batches of 4, 4, 2: two shapes
    ex = engine.Execution(channels_last=False, compile=True)
    graphs = []
    caplog.set_level(logging.WARNING, logger="torch._dynamo")
    for i, rnd in enumerate(decay_rounds([(16, 16), (8, 8), (4, 4), (2, 2)], epochs=1)):
        rnd.apply(model)
        t = engine.make_trainee("student", model, engine.OptimSpec(lr=0.01), CPU, ex)
        spec = engine.FitSpec(1, 0, CPU, tmp_path / f"r{i}.pt", progress=False, execution=ex)
        before = counters["stats"]["unique_graphs"]
        engine.fit([t], train, val, spec)
        graphs.append(counters["stats"]["unique_graphs"] - before)
    assert sum(graphs) > 8  # more than dynamo's default limit of one code object
    assert all(g >= 3 for g in graphs), graphs  # two step shapes and the evaluation, every round
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage()]


def test_a_stage_that_needs_more_graphs_fails_loudly(tmp_path, monkeypatch):
    """Past the engine's limit a round does not fall back to eager without a word."""
    from lowbit.engine import compiling
    from lowbit.errors import TrainingError

    monkeypatch.setattr(compiling, "RECOMPILE_LIMIT", 1)
    model = quantize(_fp(), 4, 4)
    ex = engine.Execution(channels_last=False, compile=True)
    t = engine.make_trainee("student", model, engine.OptimSpec(lr=0.01), CPU, ex)
    spec = engine.FitSpec(1, 0, CPU, tmp_path / "r.pt", progress=False, execution=ex)
    # the room is the larger of the engine's limit and dynamo's own: both 1 here (torch's
    # own patch, which restores the value; monkeypatch would delete the config entry)
    with (
        torch._dynamo.config.patch(recompile_limit=1),
        pytest.raises(TrainingError, match="recompile"),
    ):
        engine.fit([t], _data(6, 1, 4), _data(4, 2, 4), spec)


def _lsq_step(compiled: bool, x: torch.Tensor) -> tuple[dict, dict]:
    torch._dynamo.reset()
    model = quantize(_fp(), 2, 2, quantizer="lsq")
    ex = engine.Execution(channels_last=False, compile=compiled)
    t = engine.make_trainee("student", model, engine.OptimSpec(lr=0.0), CPU, ex)
    y = torch.arange(len(x)) % 10
    engine.CrossEntropy()([t], x, y)
    steps = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith(".step")}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if n.endswith(".step")}
    return steps, grads


@pytest.mark.slow
def test_lsq_first_batch_initialisation_under_compile_equals_eager():
    """The data-dependent step initialisation (LSQ §2.1) on the first compiled batch: the
    same steps as eager, and the steps' own gradients of that batch (lr 0: unchanged)."""
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    (s_e, g_e), (s_c, g_c) = _lsq_step(False, x), _lsq_step(True, x)
    assert len(s_e) == 2  # the second conv's weight and input (first conv, fc stay FP)
    for n in s_e:
        torch.testing.assert_close(s_c[n], s_e[n], rtol=1e-5, atol=0)  # a mean: sum order
        assert g_e[n] != 0
        torch.testing.assert_close(g_c[n], g_e[n], rtol=1e-3, atol=1e-6)


class _Staged(nn.Module):
    """Two residual-stage-like children named layer1 / layer2: KD's hint points."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(x)))


def _kd_step(compiled: bool, beta: float = 10.0) -> dict[str, torch.Tensor]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    student, teacher = quantize(_Staged(), 2, 2), _Staged()
    ex = engine.Execution(channels_last=False, compile=compiled)
    nets = {"student": student, "teacher": teacher}
    ts = [engine.make_trainee(n, m, engine.OptimSpec(lr=0.1), CPU, ex) for n, m in nets.items()]
    objective = JointDistillation(KDWeights(hint_beta=beta), hint_models=list(nets.values()))
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    out = objective(ts, x, torch.arange(4))
    return {"loss": out["student"].loss, **{n: p.detach() for n, p in student.named_parameters()}}


@pytest.mark.slow
def test_kd_hint_hooks_under_compile_equal_eager():
    eager, compiled = _kd_step(False), _kd_step(True)
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5, msg=k)
    assert _kd_step(False, beta=0.0)["loss"] < eager["loss"]  # the hint term is in the loss
