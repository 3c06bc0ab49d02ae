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
from lowbit.quant.convert import load_quant_state, quant_state


@dataclass(frozen=True)
class OptimSpec:
    """SGD with Nesterov momentum and a step schedule (paper §5 recipes)."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # on every parameter, BatchNorm included (as the authors)
    milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)


@dataclass
class Trainee:
    """One network trained by the engine, with its own optimiser."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    spec: OptimSpec
    scaler: torch.amp.GradScaler | None = None

    def set_epoch(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.spec.lr_at(epoch)


def make_trainee(name: str, model: nn.Module, spec: OptimSpec, device: torch.device) -> Trainee:
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    # Several ranks: train through DDP (gradients averaged over ranks). Checkpoints and
    # quantizer state always go through _unwrap, so their keys never depend on it.
    model = distributed.wrap(model, device)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov and spec.momentum > 0,
        weight_decay=spec.weight_decay,
    )
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    return Trainee(name, model, opt, spec, scaler)


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bfloat16-free mixed precision on CUDA (float16 + GradScaler); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


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
        with autocast(x.device):
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
    on_epoch_end: Callable[[dict[str, float]], None] | None = None
    # Evaluate after every k-th epoch and always after the last; the skipped epochs'
    # validation metrics are NaN (a CPU budget saver for large validation sets).
    eval_every: int = 1


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    images: int = 0


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


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if rank_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _topk_correct(logits: Tensor, y: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # (N, k_max)
    hit = top.eq(y[:, None])
    return [int(hit[:, : min(k, k_max)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], device: torch.device
) -> dict:
    """loss (mean cross-entropy, nats), top1 and top5 (%) over the loader, all ranks."""
    # Evaluate the bare network with rank 0's buffers: no DDP collectives per batch
    # (ranks may see different numbers of val batches), and every rank scores the
    # network rank 0 saves. The per-rank sums are all-reduced below.
    model = _unwrap(model)
    distributed.broadcast_buffers(model)
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss * n, top1 hits, top5 hits, n
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            logits = model(x).float()
        c1, c5 = _topk_correct(logits, y)
        sums[0] += float(F.cross_entropy(logits, y, reduction="sum"))
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
    hist = History(list(state["history"]), float(state["wall_s"]), int(state["images"]))
    return int(state["epoch"]) + 1, hist


def fit(
    trainees: Sequence[Trainee],
    train_loader: Iterable[tuple[Tensor, Tensor]],
    val_loader: Iterable[tuple[Tensor, Tensor]],
    spec: FitSpec,
    objective: Objective | None = None,
    hooks: Sequence[Hook] = (),
) -> History:
    """Train `trainees` for spec.epochs, evaluating each after every epoch.

    Per-epoch metrics are keyed "<net>/<metric>" (train_loss, train_top1, val_loss,
    val_top1, val_top5, lr) plus "epoch", "epoch_s" and "images_per_s".
    """
    objective = objective or CrossEntropy()
    start, history = load_state(spec, trainees)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    total = spec.epochs * steps_per_epoch
    for epoch in range(start, spec.epochs):
        seed_everything(spec.seed, epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        for t in trainees:
            t.set_epoch(epoch)
            t.model.train()
        sums: dict[str, list[float]] = {t.name: [0.0, 0.0] for t in trainees}
        n_seen, t0 = 0, time.perf_counter()
        batches = _progress(
            train_loader, steps_per_epoch, f"epoch {epoch + 1}/{spec.epochs}", spec.progress
        )
        for i, (x, y) in enumerate(batches):
            x = x.to(spec.device, non_blocking=True)
            y = y.to(spec.device, non_blocking=True)
            if spec.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            step = epoch * steps_per_epoch + i
            for h in hooks:
                h.on_step(step, total)
            outs = objective(trainees, x, y)
            for name, out in outs.items():
                loss = float(out.loss)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"non-finite loss ({loss}) for {name} at epoch {epoch + 1}, step {i + 1}; "
                        f"last good checkpoint kept: {spec.checkpoint}"
                    )
                sums[name][0] += loss * len(y)
                sums[name][1] += _topk_correct(out.logits, y, (1,))[0]
            n_seen += len(y)
        for h in hooks:
            if hasattr(h, "on_epoch_end"):
                h.on_epoch_end()
        evaluate_now = (epoch + 1) % max(spec.eval_every, 1) == 0 or epoch + 1 == spec.epochs
        row = _epoch_row(trainees, sums, n_seen, val_loader if evaluate_now else None, spec, epoch)
        row["epoch_s"] = time.perf_counter() - t0
        row["images_per_s"] = row["train_images"] / max(row["epoch_s"], 1e-9)
        history.wall_s += row["epoch_s"]
        history.images += int(row["train_images"])
        history.epochs.append(row)
        save_state(spec, trainees, epoch, history)
        if spec.on_epoch_end is not None:
            spec.on_epoch_end(row)
    return history


def _epoch_row(
    trainees: Sequence[Trainee],
    sums: dict[str, list[float]],
    n_seen: int,
    val_loader: Iterable[tuple[Tensor, Tensor]] | None,
    spec: FitSpec,
    epoch: int,
) -> dict[str, float]:
    names = [t.name for t in trainees]
    flat = [v for name in names for v in sums[name]] + [float(n_seen)]
    flat = _all_sum(flat, spec.device)
    n = max(flat[-1], 1.0)
    row: dict[str, float] = {"epoch": epoch + 1, "train_images": flat[-1]}
    for i, t in enumerate(trainees):
        nan = float("nan")
        val = (
            evaluate(t.model, val_loader, spec.device)
            if val_loader is not None
            else {"loss": nan, "top1": nan, "top5": nan}
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
