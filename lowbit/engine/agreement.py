"""Per-image agreement of two evaluations of one network on the same validation set.

A top-1 difference between two evaluations is (gained - lost) / n: *gained* counts the
images the later evaluation answers right and the earlier one wrong, *lost* the reverse.
Those two counts are what McNemar's test needs to tell a curve that is still rising from
evaluation noise (lowbit.training.convergence): on 360 validation images one image is
0.28 points, and a 2-bit network at its lowest learning rate flips a dozen of them from
one epoch to the next.

Each rank compares its own validation shard with its own earlier answers; the counts are
summed over ranks. The reference answers (one (N_rank,) bool tensor per rank) travel in
the round's checkpoint, so a resumed round compares with the same evaluation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from lowbit.engine.reduce import all_sum, rank_world
from lowbit.errors import TrainingError


def top1_hits(logits: Tensor, y: Tensor) -> Tensor:
    """(N,) bool on the logits' device: whether each image's top-1 class is its label.
    They stay there until the evaluation ends (`on_host`): no host sync per batch."""
    return logits.argmax(dim=1).eq(y)


def on_host(hits: list[Tensor]) -> Tensor:
    """One evaluation's per-batch answers as one (N,) bool CPU tensor: one copy."""
    return torch.cat(hits).cpu() if hits else torch.zeros(0, dtype=torch.bool)


def every_rank(hits: Tensor) -> list[Tensor]:
    """Every rank's answers in rank order (one tensor on a single process)."""
    world = rank_world()[1]
    if world == 1:
        return [hits]
    gathered: list[Tensor | None] = [None] * world
    dist.all_gather_object(gathered, hits)
    return [g for g in gathered if g is not None]


def compare(reference: list[Tensor], hits: Tensor, device: torch.device) -> tuple[float, float]:
    """(gained, lost) image counts of `hits` against this rank's reference, all ranks."""
    ref = reference[rank_world()[0]]
    if ref.shape != hits.shape:
        raise TrainingError(
            f"the validation shard changed from {ref.numel()} to {hits.numel()} images "
            "since the round's reference evaluation: delete the round's checkpoint to restart"
        )
    counts = torch.tensor(
        [(hits & ~ref).sum().item(), (ref & ~hits).sum().item()], dtype=torch.float64
    )
    gained, lost = all_sum(counts, device)
    return gained, lost
