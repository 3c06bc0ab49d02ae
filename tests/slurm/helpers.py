"""Helpers shared by the launch tests: params.yaml for the local cluster, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lowbit.config import StageConfig, load_config

REPO = Path(__file__).resolve().parents[2]
LOCAL_PROFILE = REPO / "slurm" / "profiles" / "local.yaml"


def write_params(tmp_path: Path, executor: str = "slurm", **sections: Any) -> Path:
    """A params.yaml in tmp_path for the local cluster: its profile, a job folder here."""
    params: dict[str, Any] = {
        "common": {"executor": executor, "progress": False, "workers": 0},
        "slurm": {"profile": str(LOCAL_PROFILE), "folder": "runs/.submitit"},
    }
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    path = tmp_path / "params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params))
    return path


def make_cfg(
    tmp_path: Path, executor: str = "slurm", stage: str = "pretrain", **sections: Any
) -> StageConfig:
    return load_config(stage, write_params(tmp_path, executor, **sections))
