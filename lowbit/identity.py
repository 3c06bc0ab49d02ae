"""A run's identity: everything that changes which network a run trains, and its one name.

A run is a stage trained at weight / activation bit-widths with a quantizer, a
block-output policy, a model, the kind of FP network its chain starts from, and a tag
(another run of the same stage and bits, e.g. `long`). Config loading builds one
`RunId` per run; its `slug()` names the run's output folder (`runs/<stage>/<slug>/`), its
dvclive folder, its SLURM job and its archived copy (`results/seed<N>/<stage>/<slug>/`),
and the report groups runs by it. Nothing else formats or parses a run's name.

The slug is the bit-widths (`w2a2`, or `fp` for the full-precision network), then one
token per setting that differs from its default, in a fixed order, then the tag:

    >>> RunId("direct", 2, 2).slug(), RunId("direct", 2, 2, quantizer="lsq", tag="long").slug()
    ('w2a2', 'w2a2-lsq-long')
    >>> RunId.parse("direct", "w4a4-preresnet20-fpblocks-relu")
    RunId(stage='direct', w_bits=4, a_bits=4, model='preresnet20', quantizer='dorefa', \
block_output='fp', fp_start='relu', tag='')
    >>> RunId("pretrain", quantizer="lsq").slug()  # an FP network has no quantizer
    'fp'

This module imports neither torch nor pydantic: `lowbit --help`, config validation and
the report load it cheaply.
"""

from __future__ import annotations

import numbers
import re
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from lowbit.errors import ConfigError

MIN_BITS = 2
MAX_BITS = 32  # 32 = no rounding (tanh-normalised weights, clipped activations)
FP_STAGE = "pretrain"  # the stage that trains the full-precision network
# Known to the model registry (lowbit.models.registry.MODELS; a test keeps them equal):
# listed here so that parsing a slug needs no torch.
MODELS = ("resnet20", "preresnet20", "resnet18", "resnet34", "resnet50", "alexnet_bn")
QUANTIZERS = ("dorefa", "pact", "lsq")
BLOCK_OUTPUTS = ("quantized", "fp")
FP_STARTS = ("relu", "clip")
CHOICES = {"model": MODELS, "quantizer": QUANTIZERS, "block_output": BLOCK_OUTPUTS,
           "fp_start": FP_STARTS}  # fmt: skip
# The slug token of block_output "fp" (the others are the values themselves).
FP_BLOCKS = "fpblocks"
# Each setting's default: a default value adds no token to the slug.
DEFAULTS = {"model": "resnet20", "quantizer": "dorefa", "block_output": "quantized",
            "fp_start": "relu"}  # fmt: skip
# What a run written before a field existed used (its metrics.json lacks the key).
LEGACY = {"fp_start": "relu"}
_HEAD = re.compile(r"^(?:fp|w(\d+)a(\d+))$")
TAG_PATTERN = r"^[a-z0-9+]*(?:-[a-z0-9+]+)*$"


def check_bits(bits: object, what: str = "bits") -> int:
    """Validate a bit-width: an integer in [2, 32]; returns it as int.

    1 bit is rejected: the tanh/clip quantizers degenerate there (binary nets use a
    sign quantizer with a learned scale, which is not the paper's method).
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise ConfigError(f"{what} must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ConfigError(f"{what} must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return int(bits)


def bits_token(w_bits: int, a_bits: int) -> str:
    """ "w2a2": a precision's name in slugs, round names and network names."""
    return f"w{w_bits}a{a_bits}"


def bits_label(w_bits: int, a_bits: int) -> str:
    """The paper tables' column label: "FP" for 32/32, else e.g. "W2A2" or "W2A32"."""
    return "FP" if (w_bits, a_bits) == (MAX_BITS, MAX_BITS) else bits_token(w_bits, a_bits).upper()


def reserved(token: str) -> bool:
    """Whether `token` is a setting's slug token (a tag may not start with one)."""
    return token in {*MODELS, *QUANTIZERS, FP_BLOCKS, *FP_STARTS}


def check_tag(tag: str) -> str:
    """A tag: lowercase words joined by '-', none of them a setting's token first."""
    if not re.match(TAG_PATTERN, tag):
        raise ConfigError(f"tag {tag!r}: use lowercase letters, digits, '+' and '-' only")
    if tag and reserved(tag.split("-")[0]):
        raise ConfigError(f"tag {tag!r} starts with {tag.split('-')[0]!r}, a setting's name")
    return tag


@dataclass(frozen=True)
class RunId:
    """What makes two runs different networks (see the module docstring)."""

    stage: str
    w_bits: int = MAX_BITS
    a_bits: int = MAX_BITS
    model: str = DEFAULTS["model"]
    quantizer: str = DEFAULTS["quantizer"]
    block_output: str = DEFAULTS["block_output"]
    fp_start: str = DEFAULTS["fp_start"]
    tag: str = ""

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r}: choose one of {allowed}")
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        check_tag(self.tag)
        if self.fp:
            # The FP network has no quantizer and trains at 32 bits; its block outputs
            # matter only when they are clipped (fp_start clip).
            object.__setattr__(self, "w_bits", MAX_BITS)
            object.__setattr__(self, "a_bits", MAX_BITS)
            object.__setattr__(self, "quantizer", DEFAULTS["quantizer"])
            if self.fp_start == "relu":
                object.__setattr__(self, "block_output", DEFAULTS["block_output"])

    @property
    def fp(self) -> bool:
        return self.stage == FP_STAGE

    def settings(self) -> list[str]:
        """The slug tokens of the settings that differ from their defaults, in order."""
        out = []
        if self.model != DEFAULTS["model"]:
            out.append(self.model)
        if self.quantizer != DEFAULTS["quantizer"]:
            out.append(self.quantizer)
        if self.block_output != DEFAULTS["block_output"]:
            out.append(FP_BLOCKS)
        if self.fp_start != DEFAULTS["fp_start"]:
            out.append(self.fp_start)
        return out

    def slug(self) -> str:
        head = "fp" if self.fp else bits_token(self.w_bits, self.a_bits)
        return "-".join([head, *self.settings(), *([self.tag] if self.tag else [])])

    @classmethod
    def parse(cls, stage: str, slug: str) -> RunId:
        """The identity `slug` names in `stage` (the inverse of slug())."""
        head, *tokens = slug.split("-")
        m = _HEAD.match(head)
        if m is None or (head == "fp") != (stage == FP_STAGE):
            raise ConfigError(f"{stage}/{slug}: not a run folder name of stage {stage!r}")
        kw: dict[str, Any] = {}
        if m.group(1):
            kw.update(w_bits=int(m.group(1)), a_bits=int(m.group(2)))
        for name, values in (("model", MODELS), ("quantizer", QUANTIZERS),
                             ("block_output", (FP_BLOCKS,)), ("fp_start", FP_STARTS)):  # fmt: skip
            if tokens and tokens[0] in values:
                token = tokens.pop(0)
                kw[name] = "fp" if token == FP_BLOCKS else token
        return cls(stage, tag="-".join(tokens), **kw)

    @classmethod
    def of(cls, record: dict[str, Any], folder: str) -> RunId:
        """The identity of a run from its metrics.json and the name of its folder: the
        slug it records, or (a run written before slugs were recorded) its folder's name
        (else the bits and tag it recorded) with the settings it recorded, and those it
        lacks at the values runs used then (LEGACY)."""
        stage = str(record["stage"])
        if record.get("slug"):
            return cls.parse(stage, str(record["slug"]))
        try:
            run = cls.parse(stage, "fp" if stage == FP_STAGE and folder == stage else folder)
        except ConfigError:  # a folder named by hand: the bits and tag the run recorded
            bits = {k: int(record.get(k) or MAX_BITS) for k in ("w_bits", "a_bits")}
            run = cls(stage, **bits, tag=str(record.get("tag") or ""))
        # the settings the run recorded (a folder name omits those at their defaults)
        kw = {k: record[k] for k in ("quantizer", "block_output", "fp_start")
              if record.get(k) in CHOICES[k]}  # fmt: skip
        if record.get("model") in MODELS:
            kw["model"] = record["model"]
        kw.update({k: v for k, v in LEGACY.items() if not record.get(k)})
        return replace(run, **kw)

    def record(self) -> dict[str, Any]:
        """The fields, for metrics.json."""
        return asdict(self)

    def init(self, stage: str, tag: str = "") -> RunId:
        """The run this one starts from: `stage` (FP pretraining or an earlier quantized
        stage) at the same bit-widths and settings, with its own tag."""
        return replace(self, stage=stage, tag=tag)

    def bits_token(self) -> str:
        return bits_token(self.w_bits, self.a_bits)

    def bits_label(self) -> str:
        return bits_label(self.w_bits, self.a_bits)

    def setting(self) -> str:
        """The report's name for the settings that differ from the defaults ("" if none),
        e.g. "lsq, fp blocks": runs of different settings are never pooled. The model is
        not named: the report has a section per model."""
        names = {FP_BLOCKS: "fp blocks", "relu": "relu start", "clip": "clip start"}
        tokens = [t for t in self.settings() if t not in MODELS]
        if self.fp:  # "fp" is the plain network, whatever the default start
            tokens = [t for t in tokens if t not in FP_STARTS]
            tokens += ["clip"] if self.fp_start == "clip" else []
        return ", ".join(names.get(t, t) for t in tokens)

    def command(self, params: str = "params.yaml", sets: Sequence[str] = ()) -> str:
        """The command that trains this run, shell-quoted: read from `params`, with `sets`
        (the asking stage's `common.*` overrides, so it writes where that stage reads)."""
        args = [] if self.fp else ["--w-bits", str(self.w_bits), "--a-bits", str(self.a_bits)]
        if params != "params.yaml":
            args += ["--params", params]
        for s in [*sets, *([f"tag={self.tag}"] if self.tag else [])]:
            args += ["--set", s]
        return shlex.join(["lowbit", "stage", self.stage, *args])
