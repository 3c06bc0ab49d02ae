"""Cluster profiles: slurm/profiles/<name>.yaml, the resources of one stage job, with
per-stage overrides from params.yaml's `slurm.stages`. Read and validated here, with the
same one-line errors as params.yaml (lowbit.config.loading.explain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lowbit.config.loading import explain
from lowbit.config.sections import STAGES, section_key
from lowbit.config.stage import StageConfig
from lowbit.errors import ConfigError

PROFILES = Path("slurm") / "profiles"


# seconds from a job's start before it may be told to checkpoint (see _signal_after_start)
EARLY_S = 60  # how much earlier than signal_delay_s SLURM may send USR2 (sbatch --signal)
CATCH_S = 30  # a job's start until submitit's handler is in place
START_S = EARLY_S + CATCH_S


class Profile(BaseModel):
    """A cluster's resources for one stage job; every key is optional."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int | None = Field(None, ge=1)  # default: one per GPU, at least 1
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)  # per node
    time_min: int = Field(60, ge=2)  # and >= signal_delay_s + 90 s (_signal_after_start)
    constraint: str | None = None
    signal_delay_s: int = Field(90, ge=10)  # USR2 this long before the time limit
    additional_parameters: dict[str, str | int | bool] = {}  # extra `#SBATCH --key=value`
    setup: list[str] = []  # shell lines run before the job (module load, conda activate)

    @model_validator(mode="after")
    def _one_task_per_gpu(self) -> Profile:
        # one rank per GPU: more tasks put two ranks on one GPU (NCCL fails), fewer
        # leave GPUs the job pays for idle
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"tasks_per_node ({self.tasks_per_node}) must equal gpus_per_node "
                f"({self.gpus_per_node}): lowbit runs one task per GPU; leave it unset"
            )
        return self

    @model_validator(mode="after")
    def _signal_after_start(self) -> Profile:
        # a job dies of USR2 (FAILED, not requeued) until submitit has unpickled the stage
        # (imports torch: 10-30 s on a busy node) and installed its handler
        room = self.time_min * 60 - self.signal_delay_s
        if room < START_S:
            raise ValueError(
                f"signal_delay_s ({self.signal_delay_s}) leaves {room} s of time_min "
                f"({self.time_min} min) before the checkpoint signal; Slurm may send it "
                f"{EARLY_S} s early and a job needs {CATCH_S} s to catch it, {START_S} s in all: "
                "raise time_min or lower signal_delay_s"
            )
        return self

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)


def find_profile(name: str, base_dir: Path) -> Path:
    """slurm/profiles/<name>.yaml in base_dir or the nearest parent holding one; or a path."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        if not path.is_file():
            raise ConfigError(f"slurm.profile: profile file {path} not found")
        return path
    roots = [base_dir, *base_dir.parents, Path(__file__).resolve().parents[2]]
    for root in roots:
        if (root / PROFILES / f"{name}.yaml").is_file():
            return root / PROFILES / f"{name}.yaml"
    known = sorted({p.stem for r in roots for p in (r / PROFILES).glob("*.yaml")})
    raise ConfigError(
        f"slurm.profile: no profile {name!r} (slurm/profiles/{name}.yaml) in {base_dir} or its "
        f"parents; known profiles: {', '.join(known) or 'none'}"
    )


def _stage_overrides(cfg: StageConfig) -> dict[str, Any]:
    valid = {section_key(s) for s in STAGES}
    for key in cfg.slurm.stages:
        if section_key(key) not in valid:
            raise ConfigError(
                f"{cfg.base_dir / 'params.yaml'}: slurm.stages: unknown stage {key!r}; "
                f"stages: {', '.join(STAGES)}"
            )
    found = [v for k, v in cfg.slurm.stages.items() if section_key(k) == section_key(cfg.stage)]
    return dict(found[0] or {}) if found else {}


def load_profile(cfg: StageConfig) -> Profile:
    """The profile named by slurm.profile, with slurm.stages[<stage>] laid over it."""
    path = find_profile(cfg.slurm.profile, cfg.base_dir)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of keys")
    try:
        Profile.model_validate(raw)
    except ValidationError as e:
        raise explain(e, "", Profile, str(path)) from None
    over = _stage_overrides(cfg)
    try:
        return Profile.model_validate({**raw, **over})
    except ValidationError as e:
        src = f"{cfg.base_dir / 'params.yaml'}"
        raise explain(e, f"slurm.stages.{cfg.stage}", Profile, src) from None
