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
import time
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from lowbit.engine import agreement, compiling
from lowbit.engine.evaluation import evaluate
from lowbit.engine.loop_types import FitSpec, History, seed_everything
from lowbit.engine.reduce import all_sum, rank_world, topk_hits
from lowbit.engine.state import load_state, save_state
from lowbit.engine.steps import CrossEntropy, Hook, Objective, Trainee
from lowbit.errors import TrainingError


def _progress(it: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled or rank_world()[0] != 0:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, disable=None, dynamic_ncols=True)


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
    if spec.on_resume is not None:
        spec.on_resume(history.epochs)  # the epochs a checkpoint restored ([] if none)
    with compiling.room(spec.execution.compile):
        for epoch in range(start, spec.epochs):
            _epoch(trainees, train_loader, val_loader, spec, epoch, (objective, hooks), history)
    return history


def _epoch(
    trainees: Sequence[Trainee],
    train_loader: Iterable[tuple[Tensor, Tensor]],
    val_loader: Iterable[tuple[Tensor, Tensor]],
    spec: FitSpec,
    epoch: int,
    steps: tuple[Objective, Sequence[Hook]],
    history: History,
) -> None:
    """Train, evaluate and checkpoint one epoch (its row appended to `history`)."""
    objective, hooks = steps
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
    row = _epoch_row(trainees, sums, val, spec, epoch, history)
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
            sums[2 * j + 1] += topk_hits(out.logits, y, (1,))[0]
        sums[-1] += len(y)
    return sums


def _epoch_row(
    trainees: Sequence[Trainee],
    sums: Tensor,
    val_loader: Iterable[tuple[Tensor, Tensor]] | None,
    spec: FitSpec,
    epoch: int,
    history: History,
) -> dict[str, float]:
    """The epoch's history row; raises on a non-finite training loss (on every rank:
    the sums are all-reduced first, so all ranks take the same decision)."""
    flat = all_sum(sums, spec.device)
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
    compares = 0 < spec.compare_after <= epoch + 1
    for i, t in enumerate(trainees):
        val = (
            nan
            if val_loader is None
            else evaluate(t.model, val_loader, spec.device, spec.execution, compares)
        )
        if "hits" in val:
            _agreement(row, t.name, val.pop("hits"), history, spec, epoch)
        row[f"{t.name}/train_loss"] = flat[2 * i] / n
        row[f"{t.name}/train_top1"] = 100.0 * flat[2 * i + 1] / n
        row[f"{t.name}/val_loss"] = val["loss"]
        row[f"{t.name}/val_top1"] = val["top1"]
        row[f"{t.name}/val_top5"] = val["top5"]
        row[f"{t.name}/lr"] = t.optimizer.param_groups[0]["lr"]
        if spec.test_loader is not None:
            test = (
                nan
                if val_loader is None
                else evaluate(t.model, spec.test_loader, spec.device, spec.execution, False)
            )
            for k in ("loss", "top1", "top5"):
                row[f"{t.name}/test_{k}"] = test[k]
    return row


def _agreement(
    row: dict[str, float], name: str, hits: Tensor, history: History, spec: FitSpec, epoch: int
) -> None:
    """After epoch spec.compare_after keep the answers (the reference); after a later
    one count the images gained and lost since them."""
    if epoch + 1 == spec.compare_after:
        history.reference[name] = agreement.every_rank(hits)
        return
    if name not in history.reference:
        return  # the reference epoch did not evaluate (or an older checkpoint resumed)
    gained, lost = agreement.compare(history.reference[name], hits, spec.device)
    row[f"{name}/val_gained"], row[f"{name}/val_lost"] = gained, lost


def summarize(history: History, name: str) -> dict[str, float]:
    """Final and best-epoch validation metrics of one network (the paper reports best);
    with held-out test images also their top-1/top-5 after the last epoch and after
    the epoch validation chose (test_top1, best_test_top1, ...)."""
    if not history.epochs:
        raise TrainingError("no epoch was trained")
    last = history.epochs[-1]
    scored = [r for r in history.epochs if math.isfinite(r[f"{name}/val_top1"])] or [last]
    best = max(scored, key=lambda r: r[f"{name}/val_top1"])
    out = {
        "top1": last[f"{name}/val_top1"],
        "top5": last[f"{name}/val_top5"],
        "loss": last[f"{name}/val_loss"],
        "best_top1": best[f"{name}/val_top1"],
        "best_top5": best[f"{name}/val_top5"],
        "best_epoch": best["epoch"],
        "train_top1": last[f"{name}/train_top1"],  # beside the late gain: an underfit run
        "epochs": len(history.epochs),
        "wall_s": history.wall_s,
        "images_per_s": history.images / max(history.wall_s, 1e-9),
    }
    if f"{name}/test_top1" in last:
        for k in ("top1", "top5"):
            out[f"test_{k}"] = last[f"{name}/test_{k}"]
            out[f"best_test_{k}"] = best[f"{name}/test_{k}"]
    return out
