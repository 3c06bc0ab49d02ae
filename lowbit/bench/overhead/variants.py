"""The rows of the overhead benchmark: a network (FP, lowbit, a peer library) times an
execution (eager or compiled, fp32 or the device's mixed precision, NHWC or NCHW).

A row's name is `<model>.<eager|compiled>.<precision>[.nchw]`, e.g. `fp.compiled.bf16`
or `lowbit_w2a2.eager.fp32`; `--variants` selects rows by those names (see `select`).
"""

from __future__ import annotations

import fnmatch
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from lowbit import engine
from lowbit.errors import ConfigError

LOWBIT = ("lowbit_w4a4", "lowbit_w2a2", "lowbit_w2a2_sp", "lowbit_w2a2_kd")
PEERS = ("brevitas_w2a2", "torch_ao_qat")
MODELS = ("fp", *LOWBIT, *PEERS)
MODEL_LABELS = {
    "fp": "FP",
    "lowbit_w4a4": "lowbit W4A4",
    "lowbit_w2a2": "lowbit W2A2",
    "lowbit_w2a2_sp": "lowbit W2A2 stochastic precision (p = 0.5 per layer)",
    "lowbit_w2a2_kd": "lowbit W2A2 joint KD (FP teacher + W2A2 student)",
    "brevitas_w2a2": "Brevitas 2-bit (QuantConv2d + QuantReLU)",
    "torch_ao_qat": "torch.ao QAT int8 (fbgemm qconfig)",
}


@dataclass(frozen=True)
class Variant:
    """One row: which network, and how its steps run (the engine's Execution)."""

    model: str
    compiled: bool = False
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16": autocast dtype of the step
    channels_last: bool = True

    @property
    def name(self) -> str:
        mode = "compiled" if self.compiled else "eager"
        return f"{self.model}.{mode}.{self.precision}" + ("" if self.channels_last else ".nchw")

    @property
    def execution(self) -> engine.Execution:
        return engine.Execution(
            channels_last=self.channels_last, precision=self.precision, compile=self.compiled
        )

    @property
    def label(self) -> str:
        parts = [MODEL_LABELS[self.model], "compiled" if self.compiled else "eager"]
        parts.append(self.precision)
        if not self.channels_last:
            parts.append("NCHW (the old default layout)")
        return ", ".join(parts)

    @property
    def same_execution(self) -> tuple[bool, str, bool]:
        """The key of the FP row this one is compared with like for like."""
        return self.compiled, self.precision, self.channels_last

    @classmethod
    def parse(cls, name: str) -> Variant:
        model, mode, precision, *layout = name.split(".")
        if model not in MODELS or mode not in ("eager", "compiled") or layout not in ([], ["nchw"]):
            raise ConfigError(f"not a benchmark row name: {name!r}")
        return cls(model, mode == "compiled", precision, not layout)


def mixed_precision(device: torch.device) -> str:
    """The mixed precision a user trains with on this device: fp16 (with a GradScaler)
    on CUDA, bf16 on the CPU (fp16 autocast is CUDA-only in the engine's config)."""
    return "fp16" if device.type == "cuda" else "bf16"


def catalog(device: torch.device) -> list[Variant]:
    """Every row, in report order: FP and each lowbit network eager / compiled x fp32 /
    mixed (NHWC), the old NCHW FP default, then the peers eagerly (torch.ao's fused
    fake-quant refuses bf16 / fp16 inputs, so it runs in fp32 only)."""
    mixed = mixed_precision(device)
    rows = [
        Variant(m, compiled, p)
        for m in ("fp", *LOWBIT)
        for compiled in (False, True)
        for p in ("fp32", mixed)
    ]
    rows.insert(4, Variant("fp", False, "fp32", channels_last=False))
    rows += [Variant("brevitas_w2a2", False, "fp32"), Variant("brevitas_w2a2", False, mixed)]
    rows.append(Variant("torch_ao_qat", False, "fp32"))
    return rows


def select(rows: Sequence[Variant], patterns: Iterable[str], device: torch.device) -> list[Variant]:
    """The rows matching any pattern, in catalog order. A pattern is a model name (all of
    its rows: `fp`, `lowbit_w2a2`), or a row name with shell wildcards where `mixed`
    stands for the device's mixed precision (`*.compiled.*`, `lowbit_w2a2.eager.mixed`),
    or `all`."""
    mixed = mixed_precision(device)
    chosen: set[str] = set()
    for raw in patterns:
        pattern = raw.strip().replace(".mixed", f".{mixed}")
        if not pattern:
            continue
        hits = {
            v.name
            for v in rows
            if pattern == "all" or v.model == pattern or fnmatch.fnmatchcase(v.name, pattern)
        }
        if not hits:
            names = ", ".join(v.name for v in rows)
            raise ConfigError(f"--variants: {raw!r} matches no row; rows here: {names}")
        chosen |= hits
    return [v for v in rows if v.name in chosen]


def available(rows: Sequence[Variant]) -> tuple[list[Variant], dict[str, str]]:
    """The rows that can run here, and why the others cannot (name -> reason)."""
    skipped = {}
    if importlib.util.find_spec("brevitas") is None:
        why = "brevitas not installed (pip install 'lowbit[bench]')"
        skipped = {v.name: why for v in rows if v.model == "brevitas_w2a2"}
    return [v for v in rows if v.name not in skipped], skipped
