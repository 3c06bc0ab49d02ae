"""What one stage reads: common + its section + slurm, with paths resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit.config.base import _Strict
from lowbit.config.common import Common, Slurm
from lowbit.config.sections import Quantized


class StageConfig(_Strict):
    """Everything one stage reads: common + its section + slurm, paths resolved."""

    stage: str
    base_dir: Path  # the folder of params.yaml; relative paths resolve against it
    common: Common
    params: Any  # the stage's section model (SECTIONS[stage])
    slurm: Slurm = Slurm()

    def path(self, p: Path) -> Path:
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    @property
    def data_dir(self) -> Path:
        return self.path(self.common.data_dir)

    @property
    def runs_dir(self) -> Path:
        return self.path(self.common.runs_dir)

    @property
    def variant(self) -> str:
        p = self.params
        if not isinstance(p, Quantized):
            return ""
        return f"w{p.w_bits}a{p.a_bits}" + (f"-{p.tag}" if p.tag else "")

    @property
    def init_variant(self) -> str:
        """The output folder name of this stage's init stage (same bits)."""
        p = self.params
        if not isinstance(p, Quantized) or p.init in ("pretrain", "scratch"):
            return ""
        return f"w{p.w_bits}a{p.a_bits}" + (f"-{p.init_tag}" if p.init_tag else "")

    @property
    def live_dir(self) -> Path | None:
        """This stage's dvclive folder, <live_dir>/<stage>[/<variant>], or None."""
        if self.common.live_dir is None:
            return None
        d = self.path(self.common.live_dir) / self.stage
        return d / self.variant if self.variant else d

    def out_dir(self, stage: str | None = None, variant: str | None = None) -> Path:
        """runs/<stage>/<variant>: where a stage writes (default: this stage)."""
        stage = stage or self.stage
        variant = self.variant if variant is None else variant
        d = self.runs_dir / stage
        return d / variant if variant else d

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "base_dir": str(self.base_dir),
            "common": self.common.model_dump(mode="json"),
            self.stage: self.params.model_dump(mode="json"),
            "slurm": self.slurm.model_dump(mode="json"),
        }
