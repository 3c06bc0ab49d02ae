"""What one stage reads: common + its section + slurm, with paths resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit.config.base import _Strict
from lowbit.config.common import Common, Slurm
from lowbit.config.sections import Quantized, Train
from lowbit.identity import RunId


def run_id(stage: str, common: Common, params: Any) -> RunId | None:
    """The identity of the run a stage's config describes (None: not a training stage)."""
    if not isinstance(params, Train):
        return None
    q = isinstance(params, Quantized)
    return RunId(
        stage,
        params.w_bits if q else 32,
        params.a_bits if q else 32,
        model=common.model,
        quantizer=common.quantizer,
        block_output=common.block_output,
        fp_start=common.fp_start,
        tag=params.tag if q else "",
    )


class StageConfig(_Strict):
    """Everything one stage reads: common + its section + slurm, paths resolved."""

    stage: str
    base_dir: Path  # the folder of params.yaml; relative paths resolve against it
    common: Common
    params: Any  # the stage's section model (STAGES[stage].section)
    slurm: Slurm = Slurm()
    # How the config was loaded (not part of the resolved config): a command this stage
    # suggests, e.g. for a missing input, reads the same file with the same overrides.
    params_file: str = "params.yaml"
    common_sets: tuple[str, ...] = ()

    def path(self, p: Path) -> Path:
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    @property
    def data_dir(self) -> Path:
        return self.path(self.common.data_dir)

    @property
    def runs_dir(self) -> Path:
        return self.path(self.common.runs_dir)

    @property
    def run(self) -> RunId | None:
        """This run's identity (None for prepare and report, which train nothing)."""
        return run_id(self.stage, self.common, self.params)

    @property
    def init_run(self) -> RunId | None:
        """The identity of the run this stage starts from (None: from scratch)."""
        p, run = self.params, self.run
        if run is None or run.fp or p.init == "scratch":
            return None
        return run.init(p.init, p.init_tag)

    @property
    def live(self) -> tuple[Path, Path] | None:
        """This run's dvclive log, or None: its folder (plots), <live_dir>/<stage>/<slug>,
        and its metrics file, <live_dir>/metrics/<stage>/<slug>.json."""
        if self.common.live_dir is None or self.run is None:
            return None
        root, slug = self.path(self.common.live_dir), self.run.slug()
        return root / self.stage / slug, root / "metrics" / self.stage / f"{slug}.json"

    @property
    def resume_dir(self) -> Path:
        """runs/.resume/<stage>/<slug>: the run's round checkpoints, outside DVC's folders."""
        if self.run is None:
            raise ValueError(f"stage {self.stage!r} trains nothing")
        return self.runs_dir / ".resume" / self.stage / self.run.slug()

    def out_dir(self, run: RunId | None = None) -> Path:
        """runs/<stage>/<slug>: where a run writes (default: this stage's run)."""
        run = run or self.run
        if run is None:
            raise ValueError(f"stage {self.stage!r} writes no run folder")
        return self.runs_dir / run.stage / run.slug()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "base_dir": str(self.base_dir),
            "common": self.common.model_dump(mode="json"),
            self.stage: self.params.model_dump(mode="json"),
            "slurm": self.slurm.model_dump(mode="json"),
        }
