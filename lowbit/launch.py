"""Run a stage in-process ("inline"), or as a submitit job ("local" | "slurm").

Whatever the executor, the stage's `run(cfg)` is the function called, and the caller
blocks on its result, so DVC sees an ordinary process that exits 0 or not.
"""

from __future__ import annotations

from typing import Any

from lowbit.config import StageConfig
from lowbit.errors import ConfigError
from lowbit.stages import stage_function


def launch(cfg: StageConfig) -> dict[str, Any]:
    executor = cfg.common.executor
    if executor == "inline":
        return stage_function(cfg.stage)(cfg)
    raise ConfigError(f"executor {executor!r} is not available in this installation")
