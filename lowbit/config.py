"""Typed configuration: params.yaml → validated pydantic models. The only YAML reader.

params.yaml holds a `common` block, one section per stage (named like the stage, with
underscores), and a `slurm` block. A stage's config is common + its section + `--set`
overrides; unknown keys fail with the list of valid ones. Every tunable has exactly one
default, here.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lowbit.errors import ConfigError
from lowbit.quant.functional import check_bits

STAGES = (
    "prepare",
    "pretrain",
    "direct",
    "quantize-weights",
    "quantize-activations",
    "bit-decay",
    "stochastic-precision",
    "distill",
    "ts-pq-kd",
    "report",
)
TRAINING_STAGES = STAGES[1:-1]
QUANT_STAGES = STAGES[2:-1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Common(_Strict):
    seed: int = 0
    dataset: Literal["digits", "cifar10", "cifar100", "imagefolder"] = "digits"
    data_root: Path | None = None  # the source's root (not needed for digits)
    data_dir: Path = Path("data/prepared")  # prepared .beton files
    runs_dir: Path = Path("runs")  # stage outputs: runs/<stage>/<variant>/
    reports_dir: Path = Path("reports")
    # dvclive logs, <live_dir>/<stage>/<variant>/ (metrics.json, plots/metrics/*.tsv);
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
    channels_last: bool = True  # NHWC tensors: faster convolutions on CUDA and the CPU
    # Mixed precision of training and evaluation steps (autocast; GradScaler for fp16).
    # The quantizers always compute in fp32; a bit-width the dtype cannot hold is refused.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    # torch.compile the training and evaluation steps (inductor fuses every quantizer
    # into the ops around it, on CUDA and on the CPU); recompiles once per bit-width.
    compile: bool = False

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from lowbit.models import MODELS

        if v not in MODELS:
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join(MODELS)}")
        return v


class Prepare(_Strict):
    image_size: int = Field(32, ge=8, le=1024)
    val_fraction: float = Field(0.2, gt=0, lt=1)  # digits only
    train_per_class: int | None = Field(None, ge=1)  # class-balanced training subset
    encoding: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = Field(90, ge=1, le=100)


class Optim(_Strict):
    """One network's SGD recipe (paper §5): Nesterov, momentum 0.9, wd 1e-4, and a
    schedule that every round of the stage runs over its own epochs (lowbit.optim)."""

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


class KD(_Strict):
    """Joint knowledge distillation (paper §4): an FP teacher trained alongside."""

    temperature: float = Field(1.0, gt=0)
    lambda_t: float = Field(1.0, ge=0)  # teacher cross-entropy
    lambda_s: float = Field(0.7, ge=0)  # student cross-entropy
    lambda_tkl: float = Field(0.5, ge=0)  # teacher <- students
    lambda_skl: float = Field(0.7, ge=0)  # student <- teacher
    loss: Literal["kl", "mse"] = "kl"
    hint_beta: float = Field(0.0, ge=0)  # L2 hint at residual-stage outputs; 0 = off
    teacher_lr: float | None = Field(None, gt=0)  # default: the stage's lr
    teacher_init: Literal["pretrain", "scratch"] = "pretrain"


class SP(_Strict):
    """Stochastic precision (paper §3.3; the sampling design is lowbit's)."""

    unit: Literal["layer", "block"] = "layer"
    ramp: list[float] = [0.5, 0.75, 0.875, 1.0]  # p(t) steps, evenly over ramp_fraction
    ramp_fraction: float = Field(0.5, gt=0, le=1)  # share of training spent ramping
    selection: Literal["uniform", "error"] = "uniform"

    @field_validator("ramp")
    @classmethod
    def _ramp(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("ramp needs at least one probability")
        if any(not 0 <= p <= 1 for p in v):
            raise ValueError(f"ramp probabilities must lie in [0, 1], got {v}")
        if any(b < a for a, b in pairwise(v)) or v[-1] != 1.0:
            raise ValueError(f"ramp must be non-decreasing and end at 1.0, got {v}")
        return v


class Train(_Strict):
    """Shared by every training stage."""

    epochs: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1)  # validate every k epochs (and after the last)
    optim: Optim = Optim()
    kd: KD | None = None  # set to train with a jointly trained FP teacher
    sp: SP | None = None  # set to train with stochastic precision


class Pretrain(Train):
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
    tag: str = Field("", pattern=r"^[a-z0-9+-]*$")

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
    pass


class QuantizeWeights(Quantized):
    # Two-stage, stage 1: activations "clip" (clipped to [0, 1], not rounded, as the
    # authors' modules) or "relu" (activation quantizer off).
    a_mode: Literal["clip", "relu"] = "clip"


class QuantizeActivations(Quantized):
    init: str = "quantize-weights"


class BitDecay(Quantized):
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
    """TS + PQ + KD, the paper's full combination: bit decay whose every step quantizes
    weights first, then activations, with a jointly trained FP teacher."""

    two_stage: bool = True
    kd: KD | None = KD()


class StochasticPrecision(Quantized):
    sp: SP | None = SP()


class Distill(Quantized):
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
    title: str = "lowbit report"
    # The dataset's name in tables, figures and published-number matching (e.g. "imagenet"
    # for an `imagefolder` source); default: each run's common.dataset.
    dataset: str | None = None
    # Folders of committed results of earlier seeds (`lowbit archive` writes them), read
    # beside common.runs_dir: each result once, the live run's copy first.
    results: list[Path] = []


class LongDirect(_Strict):
    """A longer direct run (tag `long`) at some bit-widths: the equal-cost view's baseline."""

    bits: list[int] = [2]
    epochs: int = Field(24, ge=1)


class Pipeline(_Strict):
    """What the pipeline's dvc.yaml runs (read by DVC's templating, `${pipeline.…}`): the
    bit-widths of its matrix stages, and optional extra runs."""

    bits: list[int] = [2, 4]
    ts_pq_kd_bits: list[int] = [2, 4]
    long_direct: LongDirect | None = None

    @field_validator("bits", "ts_pq_kd_bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        try:
            for b in v:
                check_bits(b, "pipeline bits")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v


class Slurm(_Strict):
    profile: str = "example"  # slurm/profiles/<profile>.yaml
    folder: Path = Path("runs/.submitit")  # submitit logs and pickles
    max_requeue: int = Field(3, ge=0)
    stages: dict[str, dict[str, Any]] = {}  # per-stage profile overrides


SECTIONS: dict[str, type[_Strict]] = {
    "prepare": Prepare,
    "pretrain": Pretrain,
    "direct": Direct,
    "quantize-weights": QuantizeWeights,
    "quantize-activations": QuantizeActivations,
    "bit-decay": BitDecay,
    "stochastic-precision": StochasticPrecision,
    "distill": Distill,
    "ts-pq-kd": TsPqKd,
    "report": Report,
}


def section_key(stage: str) -> str:
    """params.yaml section name of a stage: dashes become underscores."""
    return stage.replace("-", "_")


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


def read_params(path: Path) -> dict[str, Any]:
    """params.yaml as a dict; one clear error for a missing, unreadable or bad file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not a text file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    valid = {"common", "slurm", "pipeline", *(section_key(s) for s in STAGES)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section {unknown[0]!r}; valid sections: {', '.join(sorted(valid))}"
        )
    return raw


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = tree.get(k)
        if not isinstance(node, dict):
            node = {}
            tree[k] = node
        tree = node
    tree[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], stage: str, sets: list[str]) -> None:
    """`key=value` (stage section) or `section.key=value`; values parsed as YAML."""
    sections = {"common", "slurm", *(section_key(s) for s in STAGES)}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        head = key.split(".", 1)[0].replace("-", "_")
        if head in sections and "." in key:
            _set(raw, f"{head}.{key.split('.', 1)[1]}", value)
        else:
            _set(raw, f"{section_key(stage)}.{key}", value)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        ann = field.annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nxt = next((a for a in inner if issubclass(a, BaseModel)), None)
        if nxt is None:
            break
        model = nxt
    return model


def _explain(err: ValidationError, section: str, model: type[BaseModel], src: str) -> ConfigError:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    where = ".".join([section, *map(str, loc)])
    if e["type"] == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        valid = ", ".join(owner.model_fields)
        return ConfigError(f"{src}: unknown key {where!r}; valid keys: {valid}")
    msg = e["msg"].removeprefix("Value error, ")
    got = "" if "got" in msg or isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
    return ConfigError(f"{src}: {where}: {msg}{got}")


def _validate(model: type[BaseModel], data: Any, section: str, src: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: section {section!r} must be a mapping, got {data!r}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _explain(e, section, model, src) from None


def load_config(
    stage: str,
    params: Path = Path("params.yaml"),
    sets: list[str] | None = None,
    w_bits: int | None = None,
    a_bits: int | None = None,
    executor: str | None = None,
) -> StageConfig:
    """The validated config of one stage. Raises ConfigError with one clear line."""
    if stage not in SECTIONS:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    params = Path(params)
    raw = read_params(params)
    key = section_key(stage)
    raw.setdefault(key, {})
    if raw[key] is None:
        raw[key] = {}
    apply_overrides(raw, stage, list(sets or []))
    for name, bits in (("w_bits", w_bits), ("a_bits", a_bits)):
        if bits is not None:
            if not issubclass(SECTIONS[stage], Quantized):
                raise ConfigError(
                    f"stage {stage!r} has no bit-widths (--bits applies to quantized stages)"
                )
            raw[key][name] = bits
    if executor is not None:
        raw.setdefault("common", {})
        raw["common"]["executor"] = executor
    src = str(params)
    _validate(Pipeline, raw.get("pipeline"), "pipeline", src)  # typos fail at once
    cfg = StageConfig(
        stage=stage,
        base_dir=params.resolve().parent,
        common=_validate(Common, raw.get("common"), "common", src),
        params=_validate(SECTIONS[stage], raw.get(key), key, src),
        slurm=_validate(Slurm, raw.get("slurm"), "slurm", src),
    )
    _check_folders(cfg, src)
    _check_precision(cfg, src)
    return cfg


def stage_bits(params: Any) -> list[int]:
    """Every weight / activation bit-width a quantized stage trains at."""
    bits = {params.w_bits, params.a_bits, *getattr(params, "students", [])}
    if isinstance(params, BitDecay):
        bits |= {b for step in params.steps() for b in step}
    return sorted(bits)


def _check_precision(cfg: StageConfig, src: str) -> None:
    """fp16 / bf16 casts the quantizers' levels: refuse bit-widths they would merge."""
    from lowbit.quant.precision import check_precision

    c = cfg.common
    if c.precision == "fp16" and c.device == "cpu":
        raise ConfigError(f"{src}: common.precision fp16 needs a CUDA device; use bf16 on the CPU")
    if c.precision == "fp32" or not isinstance(cfg.params, Quantized):
        return
    for b in stage_bits(cfg.params):
        for role in ("weight", "activation"):
            try:
                check_precision(b, c.precision, role, c.quantizer)
            except ConfigError as e:
                raise ConfigError(f"{src}: {cfg.stage}: {e}") from None


def _check_folders(cfg: StageConfig, src: str) -> None:
    """Refuse output folders that overlap each other or the source data.

    Stages replace whole output folders (runs/<stage>/<variant>, the prepared data) and
    the report prunes its own stale files, so an output folder equal to, inside or
    around another one -- or around the raw data -- could delete what it must not.
    """
    c = cfg.common
    folders = {
        "common.data_dir": cfg.path(c.data_dir),
        "common.runs_dir": cfg.path(c.runs_dir),
        "common.reports_dir": cfg.path(c.reports_dir),
    }
    if c.live_dir is not None:
        folders["common.live_dir"] = cfg.path(c.live_dir)
    if c.data_root is not None:
        folders["common.data_root"] = cfg.path(c.data_root)
    names = list(folders)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = folders[a], folders[b]
            if pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa):
                raise ConfigError(
                    f"{src}: {a} ({pa}) and {b} ({pb}) overlap; "
                    "outputs and source data need folders of their own"
                )
