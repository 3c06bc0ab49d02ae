"""Validation over every rank: loss, top-1 and top-5 of one network (and, on request, which
images it answered right)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lowbit import distributed
from lowbit.engine.agreement import on_host, top1_hits
from lowbit.engine.reduce import all_sum, topk_hits
from lowbit.engine.steps import Execution, autocast, unwrap
from lowbit.errors import TrainingError
from lowbit.quant.precision import held_precision


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    execution: Execution = Execution(),
    keep_hits: bool = False,
) -> dict:
    """loss (mean cross-entropy, nats), top1 and top5 (%) over the loader, all ranks;
    with keep_hits also "hits": this rank's (N_rank,) bool top-1 answers, in loader order."""
    # Evaluate the bare network with rank 0's buffers: no DDP collectives per batch
    # (ranks may see different numbers of val batches), and every rank scores the
    # network rank 0 saves. The per-rank sums are all-reduced below.
    model = unwrap(model)
    distributed.broadcast_buffers(model)
    was_training = model.training
    model.eval()
    precision = held_precision(model, execution.precision)  # as its training steps
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, top1, top5, n
    hits: list[Tensor] = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if execution.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        c1, c5 = topk_hits(logits, y)
        if keep_hits:
            hits.append(top1_hits(logits, y))
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += c1
        sums[2] += c5
        sums[3] += len(y)
    model.train(was_training)
    loss, c1, c5, n = all_sum(sums, device)
    if n == 0:
        raise TrainingError("the evaluation loader yielded no samples")
    out = {"loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}
    if keep_hits:
        out["hits"] = on_host(hits)
    return out
