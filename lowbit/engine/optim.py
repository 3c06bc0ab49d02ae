"""One network's optimiser recipe: SGD with Nesterov momentum and a per-round schedule.

Paper §5: SGD, Nesterov momentum 0.9, weight decay 1e-4 (BatchNorm included), step
decay ×0.1 at fixed epochs (CIFAR: 80 and 120 of 200, i.e. at 40 % and 60 %). Every
round of a multi-round method (TS, PQ) gets its own schedule over its own epochs, so
each round ends annealed:

- ``step``: lr × gamma at each milestone epoch (milestones are epochs of the round);
- ``cosine``: lr × ½(1 + cos(π t / T)), t = epochs done (fractional, updated every
  step), T = the round's epochs, so the last step of the round trains at ~0.

Example:
    >>> s = OptimSpec(lr=0.1, milestones=(4, 6), epochs=10)
    >>> [round(s.lr_at(e), 4) for e in (0, 3, 4, 6, 9)]
    [0.1, 0.1, 0.01, 0.001, 0.001]
    >>> c = OptimSpec(lr=0.1, schedule="cosine", epochs=10)
    >>> round(c.lr_at(5), 4), round(c.lr_at(9, 0.5), 5)
    (0.05, 0.00062)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class OptimSpec:
    """SGD with Nesterov momentum and a step or cosine schedule over one round."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # on every parameter, BatchNorm included (as the authors)
    milestones: tuple[int, ...] = ()  # epochs of the round at which lr is multiplied by gamma
    gamma: float = 0.1
    schedule: str = "step"  # "step" | "cosine"
    epochs: int = 0  # the round's length in epochs (cosine's T); 0: unknown

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "cosine" and self.epochs < 1:
            raise ValueError("a cosine schedule needs the round's epochs (epochs >= 1)")

    def lr_at(self, epoch: int, fraction: float = 0.0) -> float:
        """The learning rate `fraction` (0 ≤ f < 1) of the way through epoch `epoch` (0-based)."""
        if self.schedule == "cosine":
            t = min((epoch + fraction) / self.epochs, 1.0)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    @property
    def annealed(self) -> bool:
        """Whether the round ends below its starting lr (False: it trains at a constant lr)."""
        if self.schedule == "cosine":
            return True
        horizon = self.epochs if self.epochs > 0 else math.inf
        return self.gamma < 1 and any(0 < m < horizon for m in self.milestones)


def resolve_milestones(milestones: Sequence[float], epochs: int) -> tuple[int, ...]:
    """Milestones of a round of `epochs` epochs: a value below 1 is a fraction of the
    round (0.4 → epoch round(0.4 × epochs)), anything else an epoch number.

    >>> resolve_milestones([0.4, 0.6], 12), resolve_milestones([80, 120], 200)
    ((5, 7), (80, 120))
    """
    out = []
    for m in milestones:
        if m <= 0:
            raise ValueError(f"milestones must be positive, got {m}")
        out.append(max(1, round(m * epochs)) if m < 1 else int(m))
    return tuple(sorted(out))
