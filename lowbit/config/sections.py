"""One model per stage section of params.yaml, every tunable with its one default, and
the table of stages (STAGES): each stage's section model and what it runs.

A stage's name is its CLI command (`lowbit stage <name>`), its dvc.yaml stage and, with
underscores, its params.yaml section. A new stage is a section model and a row here; a
new training method is a file in lowbit/methods and a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lowbit.config.base import _Strict
from lowbit.errors import ConfigError
from lowbit.identity import check_bits, check_tag
from lowbit.methods.joint_distill_config import KD
from lowbit.methods.stochastic_precision_config import SP


class Prepare(_Strict):
    """Stage `prepare`: a data source → FFCV .beton files + meta.json under common.data_dir."""

    image_size: int = Field(32, ge=8, le=1024)
    val_fraction: float = Field(0.2, gt=0, lt=1)  # digits only
    train_per_class: int | None = Field(None, ge=1)  # class-balanced training subset
    # Validation images held out of the training set, per class (taken first from images
    # the training subset does not use): epochs are chosen on them, and the source's own
    # evaluation images become the `test` split the report quotes. null: validate on
    # the source's evaluation images (digits: its own train/val split).
    holdout_per_class: int | None = Field(None, ge=1)
    encoding: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = Field(90, ge=1, le=100)


class Optim(_Strict):
    """One network's SGD recipe (paper §5): Nesterov, momentum 0.9, wd 1e-4, and a
    schedule that every round of the stage runs over its own epochs (lowbit.engine.optim)."""

    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["step", "cosine"] = "step"
    # step: lr *= gamma at each milestone; a value below 1 is a fraction of the round
    # ([0.4, 0.6]: the paper's 80 and 120 of 200), others are epochs of the round.
    milestones: list[float] = []
    gamma: float = Field(0.1, gt=0, le=1)
    # Rounds after the first of a multi-round stage (PQ steps, TS inside PQ) start at
    # lr * round_lr_scale; 1.0 trains every round with the stage's recipe (paper §5).
    round_lr_scale: float = Field(1.0, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        if any(m <= 0 or (m >= 1 and m != int(m)) for m in v):
            raise ValueError(f"milestones must be epochs (>= 1) or fractions in (0, 1), got {v}")
        if any(m < 1 for m in v) and any(m >= 1 for m in v):
            raise ValueError(f"milestones mix fractions and epochs: {v}")
        return v


class Train(_Strict):
    """Shared by every training stage."""

    epochs: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1)  # validate every k epochs (and after the last)
    optim: Optim = Optim()
    # The add-ons (lowbit.methods.ADD_ONS), each switched on by setting its block; their
    # settings' models live beside the methods.
    kd: KD | None = None  # a jointly trained FP teacher (lowbit.methods.joint_distill)
    sp: SP | None = None  # stochastic precision (lowbit.methods.stochastic_precision)


class Pretrain(Train):
    """Stage `pretrain`: the full-precision network every quantized stage starts from."""

    # Where the FP network starts: null (from scratch), torchvision:<NAME> (torchvision's
    # published weights of common.model, e.g. IMAGENET1K_V1, read from the torch hub
    # cache) or a checkpoint file; `epochs` then fine-tune it (lowbit.models.pretrained).
    start: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _plain(self) -> Pretrain:
        if self.kd is not None or self.sp is not None:
            raise ValueError("pretrain trains the full-precision network: kd and sp must be null")
        return self


class Quantized(Train):
    w_bits: int = 2
    a_bits: int = 2
    init: str = "pretrain"  # a stage name, or "scratch"
    init_tag: str = ""  # the tag of the init stage's output, if it has one
    # Tells apart several runs of one stage at the same bits (e.g. bit-decay alone and
    # bit-decay with two-stage + KD): output runs/<stage>/w<w>a<a>-<tag>.
    tag: str = ""

    @field_validator("tag", "init_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        try:
            return check_tag(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("w_bits", "a_bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        try:
            return check_bits(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        if v != "scratch" and v not in TRAINING_STAGES:
            raise ValueError(f"init must be 'scratch' or one of {', '.join(TRAINING_STAGES)}")
        return v


class Direct(Quantized):
    """Stage `direct`: the baseline — weights and activations quantized at once."""


class QuantizeWeights(Quantized):
    """Stage `quantize-weights`: two-stage optimisation, stage 1 (k-bit weights only)."""

    # Two-stage, stage 1: activations "clip" (clipped to [0, 1], not rounded, as the
    # authors' modules) or "relu" (activation quantizer off).
    a_mode: Literal["clip", "relu"] = "clip"


class QuantizeActivations(Quantized):
    """Stage `quantize-activations`: two-stage optimisation, stage 2 (activations too)."""

    init: str = "quantize-weights"


class BitDecay(Quantized):
    """Stage `bit-decay`: progressive bit-width decay down to the target (PQ)."""

    # The decay sequence, high to low. A stage runs it down to its target bits, so one
    # schedule serves every target of a pipeline (16,8,4,2 gives 16,8,4 for 4 bits).
    schedule: list[int] = [8, 4, 2]
    two_stage: bool = False  # each step quantizes weights first, then activations
    # The paper's protocol: the final round (the target bits) trains `epochs`, the same
    # recipe as direct; every earlier round trains `step_epochs` (default: `epochs`),
    # an extra cost of the method.
    step_epochs: int | None = Field(None, ge=1)
    # Equal-cost accounting instead: split this many epochs over all the rounds as
    # evenly as possible (the lowest bit-widths get the remainder).
    total_epochs: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _schedule(self) -> BitDecay:
        s = self.schedule
        if not s:
            raise ValueError("schedule must not be empty")
        for b in s:
            check_bits(b, "schedule bits")
        if any(b >= a for a, b in pairwise(s)):
            raise ValueError(f"schedule must be strictly decreasing, got {s}")
        low = min(self.w_bits, self.a_bits)
        if low not in s:
            raise ValueError(f"schedule {s} never reaches the target bits {low}")
        if self.step_epochs is not None and self.total_epochs is not None:
            raise ValueError("set step_epochs (paper protocol) or total_epochs, not both")
        return self

    def steps(self) -> list[tuple[int, int]]:
        """(w_bits, a_bits) of each decay step, ending at the target."""
        out: list[tuple[int, int]] = []
        for b in self.schedule:
            step = (max(b, self.w_bits), max(b, self.a_bits))
            if not out or out[-1] != step:
                out.append(step)
            if step == (self.w_bits, self.a_bits):
                break
        return out


class TsPqKd(BitDecay):
    """Stage `ts-pq-kd`: the paper's full combination, TS + PQ + KD: progressive bit decay
    whose every step quantizes weights first, then activations, beside a jointly trained
    full-precision teacher (the `kd` add-on, which the section sets by default)."""

    two_stage: bool = True
    kd: KD | None = KD()


class StochasticPrecision(Quantized):
    """Stage `stochastic-precision`: one-stage training through random quantized
    sub-networks (SP): one direct round with the `sp` add-on, which the section sets by
    default."""

    sp: SP | None = SP()


class Distill(Quantized):
    """Stage `distill`: joint knowledge distillation — an FP teacher trained alongside the
    low-bit student(s): one direct round with the `kd` add-on, which the section sets by
    default; the student starts from `init` (e.g. bit-decay for PQ+KD)."""

    kd: KD | None = KD()
    students: list[int] = []  # extra student bit-widths trained alongside (w = a)

    @model_validator(mode="after")
    def _needs_kd(self) -> Distill:
        if self.kd is None:
            raise ValueError("distill needs a kd block")
        for b in self.students:
            check_bits(b, "students bits")
        return self


class Report(_Strict):
    """Stage `report`: every stage's metrics → tables, plots and reports/README.md."""

    title: str = "lowbit report"
    # The dataset's name in tables, figures and published-number matching (e.g. "imagenet"
    # for an `imagefolder` source); default: each run's common.dataset.
    dataset: str | None = None
    # Folders of committed results of earlier seeds (`lowbit archive` writes them), read
    # beside common.runs_dir: each result once, the live run's copy first.
    results: list[Path] = []
    # A Markdown file shown at the end of the report's Accounting section: how the study
    # was sized (subset, epochs, eval cadence) and why. Relative to params.yaml.
    notes: Path | None = None


@dataclass(frozen=True)
class Stage:
    """A row of the table of stages: the model of the stage's section (its docstring is
    the stage's help) and its method, "module:NAME": the Method a training stage trains
    (through lowbit.training.run.run_stage); for a stage that trains nothing, its
    run(cfg) function."""

    section: type[_Strict]
    method: str

    @property
    def trains(self) -> bool:
        return issubclass(self.section, Train)

    @property
    def quantized(self) -> bool:
        return issubclass(self.section, Quantized)


# fmt: off
STAGES: dict[str, Stage] = {
    "prepare": Stage(Prepare, "lowbit.stages.prepare:run"),
    "pretrain": Stage(Pretrain, "lowbit.methods.full_precision:FULL_PRECISION"),
    "direct": Stage(Direct, "lowbit.methods.direct:DIRECT"),
    "quantize-weights": Stage(QuantizeWeights, "lowbit.methods.two_stage:TS_WEIGHTS"),
    "quantize-activations": Stage(QuantizeActivations, "lowbit.methods.two_stage:TS_ACTIVATIONS"),
    "bit-decay": Stage(BitDecay, "lowbit.methods.bit_decay:BIT_DECAY"),
    "stochastic-precision": Stage(StochasticPrecision, "lowbit.methods.direct:DIRECT"),
    "distill": Stage(Distill, "lowbit.methods.direct:DIRECT"),
    "ts-pq-kd": Stage(TsPqKd, "lowbit.methods.bit_decay:BIT_DECAY"),
    "report": Stage(Report, "lowbit.stages.report:run"),
}
# fmt: on
TRAINING_STAGES = tuple(name for name, st in STAGES.items() if st.trains)
QUANT_STAGES = tuple(name for name, st in STAGES.items() if st.quantized)


def section_key(stage: str) -> str:
    """params.yaml section name of a stage: dashes become underscores."""
    return stage.replace("-", "_")
