"""One module per pipeline stage, each exposing `run(cfg: StageConfig) -> dict[str, float]`.

The CLI, DVC (through the CLI) and submitit all call `run` the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def stage_function(stage: str) -> Callable[[Any], dict[str, float]]:
    """`run` of a stage by its name (dashes or underscores)."""
    module = importlib.import_module(f"lowbit.stages.{stage.replace('-', '_')}")
    return module.run
