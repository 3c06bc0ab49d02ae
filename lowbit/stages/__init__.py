"""What runs each pipeline stage: `stage_function(name)` is `run(cfg: StageConfig) ->
dict[str, float]`, called alike by the CLI, DVC (through the CLI) and submitit jobs.

The stages are the rows of lowbit.config.sections.STAGES. A training stage trains its
row's method (lowbit.training.run.run_stage); the others run a function of their own
here (prepare.py, report.py).
"""

from __future__ import annotations

import functools
import pkgutil
from collections.abc import Callable
from typing import Any

from lowbit.config import STAGES
from lowbit.errors import ConfigError


def stage_function(stage: str) -> Callable[[Any], dict[str, Any]]:
    """`run(cfg)` of a stage by its name (dashes or underscores)."""
    row = STAGES.get(stage.replace("_", "-"))
    if row is None:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    target = pkgutil.resolve_name(row.method)
    if not row.trains:
        return target
    from lowbit.training.run import run_stage  # torch: only once a stage trains

    return functools.partial(run_stage, method=target)
