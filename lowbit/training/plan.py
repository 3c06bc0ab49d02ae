"""What a training stage trains (Plan) and what its rounds accumulate (Stream)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lowbit.methods.base import Recipe
from lowbit.methods.rounds import Round
from lowbit.training.chain import Init
from lowbit.training.live import RunLog
from lowbit.training.origin import Origin


@dataclass
class Plan:
    """The networks ("student" first), the rounds, where the student started, the
    architecture, the combined recipe of the stage's methods and the result's label."""

    nets: dict[str, nn.Module]
    rounds: list[Round]
    init: Init
    arch: dict[str, Any]
    recipe: Recipe
    label: str

    @property
    def model(self) -> nn.Module:
        return self.nets["student"]

    @property
    def hooked(self) -> list[nn.Module]:
        """The networks the hooks act on: the student and those the recipe names."""
        return [m for n, m in self.nets.items() if n == "student" or n in self.recipe.hooked]


@dataclass
class Stream:
    """What the rounds of a stage share and accumulate."""

    log: RunLog
    rows: list[dict[str, float]] = field(default_factory=list)
    wall: float = 0.0
    images: float = 0.0
    cpu: float = 0.0
    data_epochs: int = 0  # the loader epoch index of the next round's first epoch
    origin: Origin | None = None  # rank 0: the sessions that trained the run
    annealed: bool = True  # every round ends below its starting lr
