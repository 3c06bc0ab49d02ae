"""One train step of a row, built the way the engine trains: `make_trainee` with the
row's Execution (channels_last, autocast precision, `model.compile()`), the engine's
`CrossEntropy` objective (GradScaler under fp16) or the paper's methods."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lowbit import engine
from lowbit.bench.overhead.nets import NUM_CLASSES, float_net, network
from lowbit.bench.overhead.variants import Variant

StepFn = Callable[[], dict[str, float]]


@dataclass
class Bench:
    """One row, ready to step: `step()` runs a train step and returns per-network seconds
    ({} for one network); `trainees` hold every tensor the row keeps between steps."""

    variant: Variant
    step: StepFn
    trainees: list[engine.Trainee] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.variant.name


def sync(device: torch.device) -> None:
    """Wait for the device, so a host clock brackets the kernels it launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch(device: torch.device, batch_size: int, channels_last: bool) -> tuple[Tensor, Tensor]:
    """One fixed random batch: (N, 3, 32, 32) normalised images and (N,) labels, in the
    layout the engine hands the network (it converts batches when channels_last)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)
    x, y = x.to(device), y.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def plain_step(trainee: engine.Trainee, x: Tensor, y: Tensor) -> StepFn:
    objective = engine.CrossEntropy()

    def step() -> dict[str, float]:
        objective([trainee], x, y)
        return {}

    return step


def sp_step(trainee: engine.Trainee, x: Tensor, y: Tensor, compiled: bool) -> StepFn:
    """Stochastic precision (paper §3.3) through the method's own hook: every layer is
    quantized with p = 0.5, drawn anew each step. Compiled: by gate tensors, as the
    stage does, since flipping `enabled` flags would recompile at every step."""
    from lowbit.methods import StochasticPrecision

    sp = StochasticPrecision(engine.unwrap(trainee.model), unit="layer", ramp=(0.5,))
    if compiled:
        sp.use_gates()
    plain, count = plain_step(trainee, x, y), iter(range(1 << 62))

    def step() -> dict[str, float]:
        sp.on_step(next(count), 1 << 62)
        return plain()

    return step


class _Marked(nn.Module):
    """The teacher, with a clock read after its forward. A wrapper rather than a forward
    hook: `model.compile()` compiles the hooks too, and a clock must not be traced."""

    def __init__(self, inner: nn.Module, mark: Callable[[], None]) -> None:
        super().__init__()
        self.inner, self._mark = inner, mark

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        self._mark()
        return out


def kd_step(student: engine.Trainee, teacher: engine.Trainee, x: Tensor, y: Tensor) -> StepFn:
    """A JointDistillation step (paper §4) in its order: teacher forward | student forward,
    backward, step | teacher loss, backward, step. Per-network seconds from two clock
    reads: after the teacher's forward, and when the teacher's update starts (its
    zero_grad: under fp16 a GradScaler may skip the student's optimizer.step, so a step
    hook would not fire)."""
    from lowbit.methods import JointDistillation

    objective, device, marks = JointDistillation(), x.device, {}

    def mark(key: str) -> Callable[[], None]:
        def now() -> None:
            sync(device)
            marks[key] = time.perf_counter()

        return now

    teacher.model = _Marked(teacher.model, mark("teacher_fwd"))
    zero_grad = teacher.optimizer.zero_grad

    def marked_zero_grad(set_to_none: bool = True) -> None:
        mark("student_done")()
        zero_grad(set_to_none=set_to_none)

    teacher.optimizer.zero_grad = marked_zero_grad  # type: ignore[method-assign]

    def step() -> dict[str, float]:
        t0 = time.perf_counter()
        objective([student, teacher], x, y)
        sync(device)
        t1 = time.perf_counter()
        teacher_s = (marks["teacher_fwd"] - t0) + (t1 - marks["student_done"])
        return {"teacher": teacher_s, "student": marks["student_done"] - marks["teacher_fwd"]}

    return step


def build_bench(variant: Variant, device: torch.device, batch_size: int) -> Bench:
    """The row's network(s), optimiser(s) and batch, ready to step."""
    torch.manual_seed(0)
    fp = float_net()
    x, y = batch(device, batch_size, variant.channels_last)
    spec = engine.OptimSpec(lr=0.01)  # small lr: keeps random-label steps finite
    ex = variant.execution
    trainee = engine.make_trainee("student", network(variant.model, fp), spec, device, ex)
    trainee.model.train()
    if variant.model == "lowbit_w2a2_sp":
        return Bench(variant, sp_step(trainee, x, y, variant.compiled), [trainee])
    if variant.model == "lowbit_w2a2_kd":
        teacher = engine.make_trainee("teacher", copy.deepcopy(fp), spec, device, ex)
        teacher.model.train()
        return Bench(variant, kd_step(trainee, teacher, x, y), [trainee, teacher])
    return Bench(variant, plain_step(trainee, x, y), [trainee])


def compile_room() -> AbstractContextManager[Any]:
    """Room for every compiled row in one process. `model.compile()` compiles each
    network's `Module._call_impl`, so all rows share one code object and its recompile
    limit (8): past it dynamo silently runs the rest eagerly."""
    import torch._dynamo

    return torch._dynamo.config.patch(recompile_limit=256, accumulated_recompile_limit=1024)
