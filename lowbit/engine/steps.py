"""What one training step is: a network with its optimiser (Trainee), how steps run
(Execution: layout, mixed precision, compile), and the plain objective.

Objectives perform one optimisation step on a batch for the trainees they are given;
the paper's methods supply others (joint distillation) and hooks (stochastic precision).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lowbit import distributed
from lowbit.engine.optim import OptimSpec
from lowbit.quant.precision import held_precision


@dataclass(frozen=True)
class Execution:
    """How the steps run, not what they compute: NHWC layout, autocast precision
    ("fp32" | "fp16" | "bf16"; a network whose bit-widths it cannot hold runs in fp32,
    see step_precision), and torch.compile of the networks' forward."""

    channels_last: bool = True
    precision: str = "fp32"
    compile: bool = False
    # a step may leave parameters out of the forward: DDP looks for unused ones every step
    leaves_unused: bool = False


@dataclass
class Trainee:
    """One network trained by the engine, with its own optimiser."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    spec: OptimSpec
    scaler: torch.amp.GradScaler | None = None
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16": the autocast dtype of its steps

    def set_lr(self, epoch: int, fraction: float = 0.0) -> None:
        """The schedule's lr `fraction` of the way through `epoch` (0-based, of the round)."""
        lr = self.spec.lr_at(epoch, fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def make_trainee(
    name: str,
    model: nn.Module,
    spec: OptimSpec,
    device: torch.device,
    execution: Execution = Execution(),
) -> Trainee:
    model.to(device)
    if execution.channels_last:
        # NHWC convolutions are faster on CUDA and on the CPU alike (ResNet-20, batch 128,
        # 2-core EPYC: 403 -> 222 ms per FP step); the fused quantizers walk both layouts.
        model.to(memory_format=torch.channels_last)
    if execution.compile and not compiled(model):
        # In place: state-dict keys stay the module's own. Inductor fuses each quantizer
        # into the ops around it; a new bit-width is one recompile, an SP step none
        # (StochasticPrecision.use_gates).
        # dynamic=False: a last partial batch gets its own static graph, so a resumed run
        # replays the kernels of an uninterrupted one (automatic dynamic shapes would
        # switch the full batches to a dynamic graph mid-run, with other rounding).
        model.compile(dynamic=False)
    precision = step_precision(name, model, execution.precision)
    # Several ranks: train through DDP (gradients averaged over ranks). Checkpoints and
    # quantizer state always go through _unwrap, so their keys never depend on it.
    model = distributed.wrap(model, device, execution.leaves_unused)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range
    fp16 = precision == "fp16"
    opt = torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov and spec.momentum > 0,
        weight_decay=spec.weight_decay,
        # Under loss scaling the fused kernel takes the scale and the overflow flag as
        # tensors and skips an overflowed step on the device; with the plain one
        # GradScaler reads the flag on the host (`.item()`) every step, a stream stall.
        fused=True if fp16 else None,
    )
    scaler = None
    if fp16:
        scaler = torch.amp.GradScaler(device.type)
        _zero_momentum(opt)
    return Trainee(name, model, opt, spec, scaler, precision)


def compiled(model: nn.Module) -> bool:
    """Whether `model` was compiled in place (make_trainee with Execution.compile)."""
    return getattr(model, "_compiled_call_impl", None) is not None


def _zero_momentum(opt: torch.optim.SGD) -> None:
    """Start every momentum buffer at zero. Fused SGD allocates them uninitialised at its
    first step and fills them in the kernel, which a skipped step (GradScaler's first
    steps overflow) never runs: later steps would read garbage. From zero, a first step
    computes buf = 0.9 * 0 + grad = grad, what a fresh buffer holds (dampening 0)."""
    if opt.defaults["momentum"] == 0:
        return
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p)


def step_precision(name: str, model: nn.Module, precision: str) -> str:
    """The autocast precision `model`'s steps run in: `precision`, or fp32 for a round
    whose quantizers round to more levels than it can hold (16-bit levels in bf16:
    lowbit.quant.precision), with a warning that says so."""
    held = held_precision(model, precision)
    if held != precision:
        warnings.warn(
            f"{name}: {precision} cannot hold the levels of this round's bit-widths "
            "(lowbit.quant.precision); the round trains and evaluates in fp32",
            RuntimeWarning,
            stacklevel=3,
        )
    return held


AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device, precision: str = "fp32") -> AbstractContextManager[Any]:
    """Mixed precision of a step: autocast to fp16 / bf16, or nothing for fp32. The
    quantizers compute in fp32 inside it (lowbit.quant), so their levels stay exact."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST[precision])


def optimizer_step(trainee: Trainee, loss: Tensor) -> None:
    """zero_grad, backward (scaled under AMP), step."""
    trainee.optimizer.zero_grad(set_to_none=True)
    if trainee.scaler is not None:
        trainee.scaler.scale(loss).backward()
        trainee.scaler.step(trainee.optimizer)
        trainee.scaler.update()
    else:
        loss.backward()
        trainee.optimizer.step()


@dataclass
class StepOut:
    """What an objective reports per network for one batch (both detached)."""

    loss: Tensor  # scalar
    logits: Tensor  # (N, num_classes)


class Objective(Protocol):
    def __call__(
        self, trainees: Sequence[Trainee], x: Tensor, y: Tensor
    ) -> Mapping[str, StepOut]: ...


class Hook(Protocol):
    """Called with the global step before every training step; `on_epoch_end` (optional)
    runs after the epoch's last step, before evaluation and the checkpoint."""

    def on_step(self, step: int, total: int) -> None: ...


class CrossEntropy:
    """The plain objective: one network, cross-entropy, one SGD step."""

    def __call__(self, trainees: Sequence[Trainee], x: Tensor, y: Tensor) -> dict[str, StepOut]:
        (t,) = trainees
        with autocast(x.device, t.precision):
            logits = t.model(x)
            loss = F.cross_entropy(logits, y)
        optimizer_step(t, loss)
        return {t.name: StepOut(loss.detach(), logits.detach())}


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (itself otherwise): what
    checkpoints and quantizer state always read, so their keys never depend on DDP."""
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )
