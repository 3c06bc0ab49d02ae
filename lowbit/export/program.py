"""The integer program: a trained low-bit ResNet as integer weight codes plus float scales.

Everything a runtime needs, and nothing of PyTorch's modules: the npz and ONNX writers
serialise it, `lowbit.export.integer.run_program` executes it. Arithmetic (paper §3.1,
DoReFa; docs/export.md):

- an activation quantizer turns a float tensor into unsigned codes m in [0, 2^ka - 1]
  whose value is m * act.scale (clip: 1/(2^ka - 1); PACT: alpha/(2^ka - 1); LSQ: s);
- a quantized conv multiplies those codes by signed integer weights w_int
  (DoReFa: 2q - (2^kw - 1), q in [0, 2^kw - 1]; LSQ: q in [-2^(kw-1), 2^(kw-1) - 1])
  with int32 accumulation, then applies one float rescale per output channel that also
  holds the folded BatchNorm: y_c = acc_c * scale_c + shift_c.
- The first conv and the last fc stay float (the paper's layer policy), as do the
  residual additions, ReLUs and pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.errors import LowbitError

FORMAT = "lowbit-int/1"
ACT_KINDS = ("clip", "pact", "lsq")
WEIGHT_KINDS = ("dorefa", "lsq")


class ExportError(LowbitError):
    """A network that cannot be exported as integers, or an export that failed its check."""


@dataclass(frozen=True)
class ActQuant:
    """How a float tensor becomes unsigned k-bit codes m in [0, 2^bits - 1].

    param: 1.0 for clip ([0, 1], the paper's quantizer), alpha for PACT, the step s for
    LSQ. The code's value (the fake-quant model's activation) is m * scale.
    """

    kind: str
    bits: int
    param: float = 1.0

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    @property
    def scale(self) -> float:
        return self.param if self.kind == "lsq" else self.param / self.levels

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits, "param": self.param}


@dataclass
class IntConv:
    """One quantized conv: integer weights, its input quantizer, a per-channel rescale.

    weight: int32 (C_out, C_in / groups, kh, kw), the integer multipliers w_int.
    w_scale: the value of one weight unit (DoReFa 1/(2^kw - 1); LSQ the step s).
    source: "" when the layer quantizes its own input with `act`; else the block whose
    `out_quant` codes it reads (then `act` is that block's output quantizer).
    scale, shift: float64 (C_out,), y = acc * scale + shift; scale = act.scale * w_scale
    * gamma / sqrt(var + eps) of the BatchNorm that follows (runtimes may use float32).
    """

    name: str
    weight: np.ndarray
    w_bits: int
    w_kind: str
    w_scale: float
    act: ActQuant
    source: str
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    scale: np.ndarray
    shift: np.ndarray

    @property
    def fan_in(self) -> int:
        """Terms of one accumulator: C_in / groups * kh * kw."""
        return int(np.prod(self.weight.shape[1:]))

    def acc_bound(self) -> int:
        """max |acc| over all inputs: fan_in * (2^ka - 1) * max |w_int|."""
        return self.fan_in * self.act.levels * int(np.abs(self.weight).max())


@dataclass
class Block:
    """A post-activation residual block: convs (each BN-folded, ReLU between), the
    shortcut (a 1x1 IntConv, or the identity), ReLU(sum), then `out` codes or floats."""

    name: str
    convs: list[IntConv]
    downsample: IntConv | None
    out: ActQuant | None  # the block's out_quant; None: its output stays a float ReLU

    def layers(self) -> list[IntConv]:
        return self.convs + ([self.downsample] if self.downsample is not None else [])


@dataclass
class Stem:
    """The full-precision first conv (float32 weight (C, 3, k, k)), its folded BN as
    float64 per-channel scale / shift, ReLU, an optional max-pool (kernel, stride, pad)."""

    weight: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]
    scale: np.ndarray
    shift: np.ndarray
    maxpool: tuple[int, int, int] | None = None


@dataclass
class Program:
    """stem -> blocks -> global average pool -> fc (float32 weight (classes, C), bias)."""

    arch: dict[str, Any]
    stem: Stem
    blocks: list[Block]
    fc_weight: np.ndarray
    fc_bias: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def layers(self) -> list[IntConv]:
        return [layer for b in self.blocks for layer in b.layers()]
