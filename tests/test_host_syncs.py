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


def _fit(
    tmp_path, quantizer: str, steps: int, sp: str | None, kd: bool, monkeypatch, amp: str = "fp32"
) -> int:
    torch.manual_seed(0)
    nets = {"net": quantize(build_model("resnet20", 10, 16), 2, 2, quantizer=quantizer)}
    if kd:
        nets["teacher"] = build_model("resnet20", 10, 16)
    ex = engine.Execution(precision=amp)
    trainees = [
        engine.make_trainee(n, m, engine.OptimSpec(lr=0.01), CPU, ex) for n, m in nets.items()
    ]
    hooks = [StochasticPrecision(nets["net"], selection=sp, seed=0)] if sp else []
    objective = JointDistillation() if kd else None
    val = _Batches(1)
    # the first step initialises LSQ's steps and builds kernels: not counted
    warm = engine.FitSpec(1, 0, CPU, tmp_path / f"w{steps}.pt", progress=False, execution=ex)
    engine.fit(trainees, _Batches(1), val, warm, objective, hooks)
    counter = _Counter(monkeypatch)
    spec = engine.FitSpec(1, 0, CPU, tmp_path / f"c{steps}.pt", progress=False, execution=ex)
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


def test_fp16_loss_scaling_reads_nothing_per_step(tmp_path, monkeypatch):
    """GradScaler skips a step whose gradients overflowed: a plain optimizer makes it read
    the overflow flag on the host every step (`.item()`); one that takes the scale and
    the flag as tensors (SGD's fused kernel) decides on the device. float16 autocast
    runs on the CPU too, so the reads are counted here."""
    few = _fit(tmp_path, "dorefa", 2, None, False, monkeypatch, amp="fp16")
    many = _fit(tmp_path, "dorefa", 6, None, False, monkeypatch, amp="fp16")
    assert many == few, (few, many)


def test_evaluation_reads_the_answers_once_not_per_batch(monkeypatch):
    """The per-image answers the convergence check keeps leave the device once per
    evaluation (one `.cpu()`), not once per validation batch."""
    torch.manual_seed(0)
    model = quantize(build_model("resnet20", 10, 16), 2, 2)

    def copies(batches: int) -> tuple[int, int]:
        count = {"cpu": 0}
        real = torch.Tensor.cpu

        def cpu(t, *a, **k):
            count["cpu"] += 1
            return real(t, *a, **k)

        monkeypatch.setattr(torch.Tensor, "cpu", cpu)
        out = engine.evaluate(model, _Batches(batches), CPU, keep_hits=True)
        monkeypatch.undo()
        assert out["hits"].shape == (8 * batches,) and out["hits"].device == CPU
        return count["cpu"], batches

    (few, _), (many, _) = copies(2), copies(6)
    assert many == few, (few, many)


def test_a_skipped_first_fp16_step_leaves_the_momentum_at_zero():
    """An overflowed first step (GradScaler starts at 2^16) is skipped; the step after it
    is plain SGD's first step (fused SGD would otherwise read an uninitialised buffer)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    ref = torch.nn.Linear(4, 2)
    ref.load_state_dict(net.state_dict())
    ex = engine.Execution(channels_last=False, precision="fp16")
    t = engine.make_trainee("net", net, engine.OptimSpec(lr=0.1), CPU, ex)
    x = torch.randn(3, 4)
    engine.optimizer_step(t, net(x).sum() * 1e35)  # x 65536 overflows float32: skipped
    engine.optimizer_step(t, net(x).pow(2).sum())
    plain = torch.optim.SGD(
        ref.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    ref(x).pow(2).sum().backward()
    plain.step()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
