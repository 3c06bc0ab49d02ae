"""Sums over ranks and top-k counts that stay on the device until an epoch is read."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from lowbit.distributed import rank_world


def all_sum(values: Tensor, device: torch.device) -> list[float]:
    """Sum a float64 vector over ranks; one host read."""
    if rank_world()[1] > 1:
        values = values.to(device)
        dist.all_reduce(values)
    return values.tolist()


def topk_hits(logits: Tensor, y: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Per k, how many rows have the label among their top-k logits (0-dim tensors on the
    logits' device: counting does not wait for the device)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # (N, k_max)
    hit = top.eq(y[:, None])
    return [hit[:, : min(k, k_max)].any(dim=1).sum() for k in ks]
