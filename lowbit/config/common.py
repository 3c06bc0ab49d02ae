"""The `common` block (every stage reads it), the `pipeline` block (dvc.yaml reads it)
and the `slurm` block with the cluster profiles it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from lowbit.config.base import _Strict
from lowbit.config.sections import QUANT_STAGES
from lowbit.errors import ConfigError
from lowbit.identity import MODELS, check_bits


class Common(_Strict):
    seed: int = 0
    dataset: Literal["digits", "cifar10", "cifar100", "imagefolder"] = "digits"
    data_root: Path | None = None  # the source's root (not needed for digits)
    data_dir: Path = Path("data/prepared")  # prepared .beton files
    runs_dir: Path = Path("runs")  # stage outputs: runs/<stage>/<slug>/
    reports_dir: Path = Path("reports")
    # dvclive logs: <live_dir>/<stage>/<slug>/ (plots) and <live_dir>/metrics/<stage>/<slug>.json;
    # null: no dvclive log (the per-epoch lines still go to stderr)
    live_dir: Path | None = Path("dvclive")
    model: str = "resnet20"
    quantizer: Literal["dorefa", "pact", "lsq"] = "dorefa"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = Field(128, ge=1)
    workers: int = Field(2, ge=0)
    loader: Literal["auto", "ffcv", "torch"] = "auto"
    augment: Literal["auto", "cifar", "imagenet", "none"] = "auto"
    executor: Literal["inline", "local", "slurm"] = "inline"
    progress: bool | None = None  # progress bars; null: when stdout is a terminal
    # Residual-block outputs: "quantized" replaces the post-addition ReLU of every
    # post-activation block but the last by the activation quantizer (the authors' code:
    # shortcuts carry k-bit values); "fp" keeps the residual stream in full precision.
    block_output: Literal["quantized", "fp"] = "quantized"
    # The FP network every quantized stage starts from: "relu", the plain network; "clip",
    # its activations clipped to [0, 1] wherever the quantized network clips them (every
    # quantized layer's input, and the block outputs the block_output policy quantizes),
    # with float weights, so conversion changes only the rounding and the weights'
    # tanh normalisation (docs/decisions.md).
    fp_start: Literal["relu", "clip"] = "relu"
    channels_last: bool = True  # NHWC tensors: faster convolutions on CUDA and the CPU
    # Mixed precision of training and evaluation steps (autocast; GradScaler for fp16).
    # The quantizers always compute in fp32; a round at bit-widths the dtype cannot hold
    # (16-bit levels in bf16) trains in fp32 (lowbit.quant.precision).
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    # torch.compile the training and evaluation steps (inductor fuses every quantizer
    # into the ops around it, on CUDA and on the CPU); recompiles once per bit-width.
    compile: bool = False
    # Keep a finished run's round checkpoints (runs/.resume/): `lowbit stage … --all` sets
    # it while it trains a stage's runs one after another, so that a rerun of a stage
    # stopped half-way (DVC deletes the stage's folder first) resumes the runs that had
    # finished instead of training them again; it deletes them once every run finished.
    keep_resume: bool = False

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in MODELS:
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join(MODELS)}")
        return v


class LongDirect(_Strict):
    """A longer direct run (tag `long`) at some bit-widths: the equal-cost view's baseline."""

    bits: list[int] = [2]
    epochs: int = Field(24, ge=1)


def _bit_list(v: list[int]) -> list[int]:
    try:
        for b in v:
            check_bits(b, "pipeline bits")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return v


class Pipeline(_Strict):
    """The runs of each stage of the pipeline (`lowbit stage <name> --all`, which dvc.yaml
    calls): the bit-widths (w = a) of the quantized stages, pretrain's FP networks, and
    optional extra runs."""

    # Where lowbit's source lies, seen from params.yaml's folder: dvc.yaml's code
    # dependencies (the paper pipelines in pipeline/<name>/ share the root's dvc.yaml).
    code: str = "."
    bits: list[int] = [2, 4]  # the bit-widths (w = a) of every quantized stage ...
    # ... but these stages' own, e.g. {ts-pq-kd: [2], stochastic-precision: [2]}
    stage_bits: dict[str, list[int]] = {}
    long_direct: LongDirect | None = None
    # The FP networks `pretrain --all` trains (common.fp_start); null: common.fp_start only.
    # The report compares with the plain one (relu), the quantized stages start from
    # common.fp_start's.
    fp_starts: list[Literal["relu", "clip"]] | None = None

    def runs(self, stage: str) -> list[tuple[int | None, list[str]]]:
        """(bit-width or None, --set overrides) of every run of `stage`."""
        if stage == "pretrain":
            return [(None, [f"common.fp_start={s}"]) for s in self.fp_starts or []] or [(None, [])]
        if stage not in QUANT_STAGES:
            return [(None, [])]
        out: list[tuple[int | None, list[str]]] = [
            (b, []) for b in self.stage_bits.get(stage, self.bits)
        ]
        if stage == "direct" and self.long_direct is not None:
            extra = ["tag=long", f"epochs={self.long_direct.epochs}"]
            out += [(b, extra) for b in self.long_direct.bits]
        return out

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        return _bit_list(v)

    @field_validator("stage_bits")
    @classmethod
    def _stage_bits(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for stage, bits in v.items():
            if stage not in QUANT_STAGES:
                raise ValueError(f"stage_bits: {stage!r} is not a quantized stage ({QUANT_STAGES})")
            _bit_list(bits)
        return v


class Slurm(_Strict):
    profile: str = "example"  # slurm/profiles/<profile>.yaml
    folder: Path = Path("runs/.submitit")  # submitit logs and pickles
    max_requeue: int = Field(3, ge=0)
    stages: dict[str, dict[str, Any]] = {}  # per-stage profile overrides
