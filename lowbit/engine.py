"""Training and evaluation loop shared by every stage and method.

The engine trains one or more networks ("trainees", each with its own optimiser and
learning rate) with an *objective* that performs one optimisation step on a batch,
and *hooks* called with an explicit (step, total) before every step. The plain
objective is cross-entropy on one network; the paper's methods supply others
(joint distillation) or hooks (stochastic precision).

Determinism: every epoch reseeds all RNGs from (seed, epoch), so a run resumed from
the checkpoint of epoch k repeats epochs k+1.. exactly as an uninterrupted run does.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from lowbit import checkpoint, distributed
from lowbit.errors import CheckpointError, TrainingError
from lowbit.optim import OptimSpec
from lowbit.quant.convert import load_quant_state, quant_state


@dataclass(frozen=True)
class Execution:
    """How the steps run, not what they compute: NHWC layout, autocast precision
    ("fp32" | "fp16" | "bf16"), and torch.compile of the networks' forward."""

    channels_last: bool = True
    precision: str = "fp32"
    compile: bool = False
    sampled: bool = False  # steps may leave parameters unused (stochastic precision): DDP


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
    if execution.compile and not getattr(model, "_compiled_call_impl", None):
        # In place: state-dict keys stay the module's own. Inductor fuses each quantizer
        # into the ops around it; a new bit-width is one recompile, an SP step none
        # (StochasticPrecision.use_gates).
        model.compile()
    # Several ranks: train through DDP (gradients averaged over ranks). Checkpoints and
    # quantizer state always go through _unwrap, so their keys never depend on it.
    model = distributed.wrap(model, device, execution.sampled)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov and spec.momentum > 0,
        weight_decay=spec.weight_decay,
    )
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range
    fp16 = execution.precision == "fp16"
    scaler = torch.amp.GradScaler(device.type) if fp16 else None
    return Trainee(name, model, opt, spec, scaler, execution.precision)


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


@dataclass
class FitSpec:
    epochs: int
    seed: int
    device: torch.device
    checkpoint: Path  # resumable state, rewritten atomically after every epoch
    fingerprint: str = ""  # a checkpoint with another fingerprint is not resumed
    progress: bool = True
    # Called with each epoch's history row, in order; at start also with every epoch a
    # resumed checkpoint restores, so whatever it builds equals an uninterrupted run's.
    on_epoch_end: Callable[[dict[str, float]], None] | None = None
    # Evaluate after every k-th epoch, after the epochs in eval_at (1-based) and always
    # after the last; the skipped epochs' validation metrics are NaN (a CPU budget saver
    # for large validation sets).
    eval_every: int = 1
    eval_at: tuple[int, ...] = ()
    # The loader's epoch index of this round's first epoch: the epochs the run's init
    # chain (earlier stages and rounds) has already drawn.
    data_offset: int = 0
    execution: Execution = Execution()  # layout and precision of batches and evaluation


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    images: int = 0
    cpu_s: float = 0.0  # CPU seconds of this process (all threads): immune to pauses


def seed_everything(seed: int, epoch: int = 0) -> None:
    """Seed torch, numpy and random from (seed, epoch)."""
    s = (seed * 1_000_003 + epoch) % (2**31 - 1)
    random.seed(s)
    torch.manual_seed(s)
    try:
        import numpy as np

        np.random.seed(s)
    except ImportError:  # pragma: no cover
        pass


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: Tensor, device: torch.device) -> list[float]:
    """Sum a float64 vector over ranks; one host read."""
    if rank_world()[1] > 1:
        values = values.to(device)
        dist.all_reduce(values)
    return values.tolist()


def _topk_hits(logits: Tensor, y: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Per k, how many rows have the label among their top-k logits (0-dim tensors on the
    logits' device: counting does not wait for the device)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # (N, k_max)
    hit = top.eq(y[:, None])
    return [hit[:, : min(k, k_max)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    execution: Execution = Execution(),
) -> dict:
    """loss (mean cross-entropy, nats), top1 and top5 (%) over the loader, all ranks."""
    # Evaluate the bare network with rank 0's buffers: no DDP collectives per batch
    # (ranks may see different numbers of val batches), and every rank scores the
    # network rank 0 saves. The per-rank sums are all-reduced below.
    model = _unwrap(model)
    distributed.broadcast_buffers(model)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, top1, top5, n
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if execution.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, execution.precision):
            logits = model(x).float()
        c1, c5 = _topk_hits(logits, y)
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += c1
        sums[2] += c5
        sums[3] += len(y)
    model.train(was_training)
    loss, c1, c5, n = _all_sum(sums, device)
    if n == 0:
        raise TrainingError("the evaluation loader yielded no samples")
    return {"loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}


def _progress(it: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled or rank_world()[0] != 0:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, disable=None, dynamic_ncols=True)


def save_state(spec: FitSpec, trainees: Sequence[Trainee], epoch: int, history: History) -> None:
    if rank_world()[0] != 0:
        return
    nets = {}
    for t in trainees:
        nets[t.name] = {
            "model": _unwrap(t.model).state_dict(),
            "quant": quant_state(_unwrap(t.model)),
            "optimizer": t.optimizer.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else {},
        }
    checkpoint.save(
        spec.checkpoint,
        {
            "epoch": epoch,
            "fingerprint": spec.fingerprint,
            "main": trainees[0].name,
            "nets": nets,
            "history": history.epochs,
            "wall_s": history.wall_s,
            "images": history.images,
            "cpu_s": history.cpu_s,
        },
    )


def _unwrap(model: nn.Module) -> nn.Module:
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def load_state(spec: FitSpec, trainees: Sequence[Trainee]) -> tuple[int, History]:
    """Resume from spec.checkpoint if it exists and fits; returns (next epoch, history)."""
    if not spec.checkpoint.is_file():
        return 0, History()
    state = checkpoint.load(spec.checkpoint, map_location=spec.device)
    if state.get("fingerprint") != spec.fingerprint:
        return 0, History()  # another configuration's run: start over
    names = {t.name for t in trainees}
    if set(state["nets"]) != names:
        raise CheckpointError(f"{spec.checkpoint} holds networks {sorted(state['nets'])}")
    for t in trainees:
        s = state["nets"][t.name]
        try:
            _unwrap(t.model).load_state_dict(s["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{spec.checkpoint}: {str(e).splitlines()[0]}") from None
        load_quant_state(_unwrap(t.model), s["quant"])
        t.optimizer.load_state_dict(s["optimizer"])
        if t.scaler is not None and s["scaler"]:
            t.scaler.load_state_dict(s["scaler"])
    hist = History(
        list(state["history"]),
        float(state["wall_s"]),
        int(state["images"]),
        float(state.get("cpu_s", 0.0)),
    )
    return int(state["epoch"]) + 1, hist


def fit(
    trainees: Sequence[Trainee],
    train_loader: Iterable[tuple[Tensor, Tensor]],
    val_loader: Iterable[tuple[Tensor, Tensor]],
    spec: FitSpec,
    objective: Objective | None = None,
    hooks: Sequence[Hook] = (),
) -> History:
    """Train `trainees` for spec.epochs, evaluating as spec.eval_every / eval_at say.

    Per-epoch metrics are keyed "<net>/<metric>" (train_loss, train_top1, val_loss,
    val_top1, val_top5, lr) plus "epoch", "data_epoch", "epoch_s" and "images_per_s".
    """
    objective = objective or CrossEntropy()
    start, history = load_state(spec, trainees)
    if spec.on_epoch_end is not None:
        for row in history.epochs:  # restored epochs first: a log from this is complete
            spec.on_epoch_end(row)
    for epoch in range(start, spec.epochs):
        seed_everything(spec.seed, epoch)
        if hasattr(train_loader, "set_epoch"):
            # The loader's epoch index runs on across the rounds and stages of a run's
            # init chain (spec.data_offset), so no round replays another's batches.
            train_loader.set_epoch(spec.data_offset + epoch)
        t0, c0 = time.perf_counter(), time.process_time()
        sums = _train_epoch(trainees, train_loader, spec, epoch, objective, hooks)
        for h in hooks:
            if hasattr(h, "on_epoch_end"):
                h.on_epoch_end()
        val = val_loader if _evaluates(spec, epoch) else None
        row = _epoch_row(trainees, sums, val, spec, epoch)
        row["epoch_s"] = time.perf_counter() - t0
        row["cpu_s"] = time.process_time() - c0
        row["images_per_s"] = row["train_images"] / max(row["epoch_s"], 1e-9)
        history.wall_s += row["epoch_s"]
        history.cpu_s += row["cpu_s"]
        history.images += int(row["train_images"])
        history.epochs.append(row)
        save_state(spec, trainees, epoch, history)
        if spec.on_epoch_end is not None:
            spec.on_epoch_end(row)
    return history


def _evaluates(spec: FitSpec, epoch: int) -> bool:
    """Validate after 0-based `epoch`: every eval_every-th, the eval_at ones, the last."""
    done = epoch + 1
    return done % max(spec.eval_every, 1) == 0 or done in spec.eval_at or done == spec.epochs


def _train_epoch(
    trainees: Sequence[Trainee],
    loader: Iterable[tuple[Tensor, Tensor]],
    spec: FitSpec,
    epoch: int,
    objective: Objective,
    hooks: Sequence[Hook],
) -> Tensor:
    """One epoch of steps. Returns (2 * nets + 1,) float64 sums on the device: per net
    loss * n and top-1 hits, then n. They stay on the device (no host sync per step)."""
    steps = len(loader)  # type: ignore[arg-type]
    total = spec.epochs * steps
    sums = torch.zeros(2 * len(trainees) + 1, dtype=torch.float64, device=spec.device)
    for t in trainees:
        t.model.train()
    batches = _progress(loader, steps, f"epoch {epoch + 1}/{spec.epochs}", spec.progress)
    for i, (x, y) in enumerate(batches):
        x = x.to(spec.device, non_blocking=True)
        y = y.to(spec.device, non_blocking=True)
        if spec.execution.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        for t in trainees:
            t.set_lr(epoch, i / steps)
        for h in hooks:
            h.on_step(epoch * steps + i, total)
        outs = objective(trainees, x, y)
        for j, t in enumerate(trainees):
            out = outs[t.name]
            sums[2 * j] += out.loss.double() * len(y)
            sums[2 * j + 1] += _topk_hits(out.logits, y, (1,))[0]
        sums[-1] += len(y)
    return sums


def _epoch_row(
    trainees: Sequence[Trainee],
    sums: Tensor,
    val_loader: Iterable[tuple[Tensor, Tensor]] | None,
    spec: FitSpec,
    epoch: int,
) -> dict[str, float]:
    """The epoch's history row; raises on a non-finite training loss (on every rank:
    the sums are all-reduced first, so all ranks take the same decision)."""
    flat = _all_sum(sums, spec.device)
    n = max(flat[-1], 1.0)
    for i, t in enumerate(trainees):
        if not math.isfinite(flat[2 * i]):
            raise TrainingError(
                f"non-finite loss for {t.name} in epoch {epoch + 1}; "
                f"last good checkpoint kept: {spec.checkpoint}"
            )
    row: dict[str, float] = {
        "epoch": epoch + 1,
        "data_epoch": spec.data_offset + epoch,
        "train_images": flat[-1],
    }
    nan = {"loss": math.nan, "top1": math.nan, "top5": math.nan}
    for i, t in enumerate(trainees):
        val = (
            nan
            if val_loader is None
            else evaluate(t.model, val_loader, spec.device, spec.execution)
        )
        row[f"{t.name}/train_loss"] = flat[2 * i] / n
        row[f"{t.name}/train_top1"] = 100.0 * flat[2 * i + 1] / n
        row[f"{t.name}/val_loss"] = val["loss"]
        row[f"{t.name}/val_top1"] = val["top1"]
        row[f"{t.name}/val_top5"] = val["top5"]
        row[f"{t.name}/lr"] = t.optimizer.param_groups[0]["lr"]
    return row


def summarize(history: History, name: str) -> dict[str, float]:
    """Final and best-epoch validation metrics of one network (the paper reports best)."""
    if not history.epochs:
        raise TrainingError("no epoch was trained")
    last = history.epochs[-1]
    scored = [r for r in history.epochs if math.isfinite(r[f"{name}/val_top1"])] or [last]
    best = max(scored, key=lambda r: r[f"{name}/val_top1"])
    return {
        "top1": last[f"{name}/val_top1"],
        "top5": last[f"{name}/val_top5"],
        "loss": last[f"{name}/val_loss"],
        "best_top1": best[f"{name}/val_top1"],
        "best_top5": best[f"{name}/val_top5"],
        "best_epoch": best["epoch"],
        "epochs": len(history.epochs),
        "wall_s": history.wall_s,
        "images_per_s": history.images / max(history.wall_s, 1e-9),
    }
