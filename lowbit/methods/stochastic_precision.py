"""Stochastic precision, SP (paper §3.3) — the sampling design is lowbit's own.

One-stage training that quantizes randomly sampled sub-networks and keeps the rest in
full precision, ramping to the fully quantized network:
- unit: a quantized layer (its weight and input quantizers) or a residual block (all
  quantizers inside it, its output quantizer included);
- every iteration each unit is quantized with probability p(t); the others run the
  full-precision path of the same parameters (their quantizers disabled);
- p(t) steps through `ramp` (default 0.5, 0.75, 0.875, 1.0, as in Dong et al.'s
  stochastic quantization, BMVC 2017): the values before the last share the first
  `ramp_fraction` of training evenly, then p stays at the last value (1.0), so that
  BatchNorm settles on the quantized network;
- selection "uniform": units independently; "error": round(p * U) units drawn by
  roulette without replacement, with probability proportional to each unit's relative
  weight quantization error ||Q(W) - W_n|| / ||W_n|| (W_n: the tanh-normalised weight),
  so high-error units spend more training time quantized; the errors are measured at
  each epoch's first step (one read of the device per epoch).
- Draws come from a generator seeded by (seed, step): deterministic, resume-safe.
- Evaluation always runs the fully quantized network (`on_epoch_end` re-enables all).

Example:
    >>> import torch
    >>> from lowbit.models import build_model
    >>> from lowbit.quant import quantize
    >>> from lowbit.methods import StochasticPrecision
    >>> model = quantize(build_model("resnet20", 10), 2, 2)
    >>> sp = StochasticPrecision(model, unit="block", seed=0)
    >>> sp.on_step(step=0, total=100)  # p = 0.5: about half of the 9 blocks quantized
    >>> 0 <= sp.last_fraction <= 1
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lowbit.engine import compiled, derived_seed
from lowbit.methods.base import Context, Recipe
from lowbit.methods.stochastic_precision_config import DEFAULT_RAMP
from lowbit.models import residual_blocks
from lowbit.quant.convert import input_quantizer, iter_quant_layers
from lowbit.quant.functional import MAX_BITS, quantize_weight
from lowbit.quant.quantizers import Quantizer


def sp_probability(
    step: int, total: int, ramp: Sequence[float] = DEFAULT_RAMP, ramp_fraction: float = 0.5
) -> float:
    """p(t): the quantization probability of a unit at `step` of `total` steps."""
    if not ramp:
        raise ValueError("ramp needs at least one probability")
    if not 0 < ramp_fraction <= 1:
        raise ValueError(f"ramp_fraction must be in (0, 1], got {ramp_fraction}")
    if total <= 0 or not step >= 0:
        raise ValueError(f"need 0 <= step and total > 0, got step={step}, total={total}")
    head = list(ramp[:-1])
    window = ramp_fraction * total
    if not head or step >= window:
        return float(ramp[-1])
    return float(head[min(int(step * len(head) / window), len(head) - 1)])


def _units(model: nn.Module, unit: str) -> list[list[Quantizer]]:
    """The quantizers of each unit. A layer's input quantizer is its own, or, when its
    input is a quantized block output, that block's `out_quant`; a block output read by
    two layers (conv1 and the downsample conv) belongs to the first one's unit."""
    layers = list(iter_quant_layers(model))
    if unit == "layer":
        units, seen = [], set()
        for _, m in layers:
            a = input_quantizer(model, m)
            units.append([m.w_quant] + ([a] if id(a) not in seen else []))
            seen.add(id(a))
        return units
    if unit != "block":
        raise ValueError(f"unit must be 'layer' or 'block', got {unit!r}")
    units, claimed = [], set()
    for bname, block in residual_blocks(model):
        qs = [m for n, m in layers if n.startswith(bname + ".")]
        if qs:
            units.append([q for q in block.modules() if isinstance(q, Quantizer)])
            claimed.update(id(m) for m in qs)
    # quantized layers outside any residual block (e.g. AlexNet) are units of their own
    units += [[m.w_quant, m.a_quant] for _, m in layers if id(m) not in claimed]
    return units


def _unit_weights(model: nn.Module, unit: str) -> list[list[torch.Tensor]]:
    layers = list(iter_quant_layers(model))
    if unit == "layer":
        return [[m.weight] for _, m in layers]
    by_unit: list[list[torch.Tensor]] = []
    claimed = set()
    for bname, _ in residual_blocks(model):
        ws = [m.weight for n, m in layers if n.startswith(bname + ".")]
        if ws:
            by_unit.append(ws)
            claimed.update(id(w) for w in ws)
    return by_unit + [[m.weight] for _, m in layers if id(m.weight) not in claimed]


class StochasticPrecision:
    """Engine hook: before each step, choose which units run quantized."""

    def __init__(
        self,
        model: nn.Module,
        unit: str = "layer",
        ramp: Sequence[float] = DEFAULT_RAMP,
        ramp_fraction: float = 0.5,
        selection: str = "uniform",
        seed: int = 0,
    ) -> None:
        if selection not in ("uniform", "error"):
            raise ValueError(f"selection must be 'uniform' or 'error', got {selection!r}")
        self.model, self.unit, self.selection, self.seed = model, unit, selection, seed
        self.ramp, self.ramp_fraction = tuple(ramp), ramp_fraction
        self.units = _units(model, unit)
        if not self.units:
            raise ValueError("stochastic precision found no quantized layer in the model")
        # A quantizer the round switched off (e.g. two-stage's relu mode) stays off.
        self.base = [[q.enabled for q in u] for u in self.units]
        self.last_mask: torch.Tensor = torch.ones(len(self.units), dtype=torch.bool)
        self.gated = False
        self._epoch_errors: torch.Tensor | None = None

    def use_gates(self) -> None:
        """Switch units by tensor value (`Quantizer.gate`) instead of the `enabled` flag:
        for a compiled model, which must not recompile at every step's new sample."""
        device = next(self.model.parameters()).device
        for quantizers in self.units:
            for q in quantizers:
                q.gate = torch.ones((), dtype=torch.bool, device=device)
        self.gated = True

    @property
    def last_fraction(self) -> float:
        return float(self.last_mask.float().mean())

    @torch.no_grad()
    def unit_errors(self) -> torch.Tensor:
        """Relative weight quantization error of each unit, shape (U,), on the CPU.

        Computed on the weights' device and read back once (one host sync)."""
        out = []
        bits = [u[0].bits for u in self.units]
        for ws, b in zip(_unit_weights(self.model, self.unit), bits, strict=True):
            num = den = torch.zeros((), device=ws[0].device)
            for w in ws:
                ref = quantize_weight(w, MAX_BITS)  # tanh-normalised, unrounded
                num = num + (quantize_weight(w, b) - ref).pow(2).sum()
                den = den + ref.pow(2).sum()
            out.append((num / den.clamp(min=1e-12)).sqrt())
        return torch.stack(out).cpu()

    def _errors(self) -> torch.Tensor:
        """unit_errors of this epoch: measured at its first step, so sampling reads the
        device once per epoch, not once per step (on_epoch_end forgets them)."""
        if self._epoch_errors is None:
            self._epoch_errors = self.unit_errors()
        return self._epoch_errors

    def sample(self, p: float, generator: torch.Generator) -> torch.Tensor:
        """Boolean mask (U,): which units are quantized this step."""
        n = len(self.units)
        if p >= 1.0:
            return torch.ones(n, dtype=torch.bool)
        if self.selection == "uniform":
            return torch.rand(n, generator=generator) < p
        k = round(p * n)
        mask = torch.zeros(n, dtype=torch.bool)
        if k > 0:
            err = self._errors().clamp(min=1e-12)
            mask[torch.multinomial(err / err.sum(), k, replacement=False, generator=generator)] = (
                True
            )
        return mask

    def on_step(self, step: int, total: int) -> None:
        p = sp_probability(step, total, self.ramp, self.ramp_fraction)
        g = torch.Generator().manual_seed(derived_seed(self.seed, step, 2**63 - 1))
        self.last_mask = self.sample(p, g)
        for quantizers, base, on in zip(
            self.units, self.base, self.last_mask.tolist(), strict=True
        ):
            for q, b in zip(quantizers, base, strict=True):
                if self.gated:
                    q.gate.fill_(on)  # type: ignore[union-attr]
                else:
                    q.enabled = on and b

    def on_epoch_end(self) -> None:
        """Evaluation and checkpoints see the fully quantized network."""
        self._epoch_errors = None
        for quantizers, base in zip(self.units, self.base, strict=True):
            for q, b in zip(quantizers, base, strict=True):
                q.enabled = b
                if self.gated:
                    q.gate.fill_(True)  # type: ignore[union-attr]
        self.last_mask = torch.ones(len(self.units), dtype=torch.bool)


class StochasticPrecisionAddOn:
    """Add-on of any quantized stage whose section sets `sp:` (the stage
    `stochastic-precision` sets it by default): one hook per student, seeded per student;
    on compiled networks the units switch by tensor value (no recompile per step). A
    step leaves the switched-off quantizers' parameters unused."""

    name = "sp"

    def recipe(self, ctx: Context) -> Recipe:
        sp, seed = ctx.cfg.params.sp, ctx.cfg.common.seed

        def hooks(students: list[nn.Module]) -> list[StochasticPrecision]:
            out = [
                StochasticPrecision(m, sp.unit, sp.ramp, sp.ramp_fraction, sp.selection, seed + i)
                for i, m in enumerate(students)
            ]
            for h in out:
                if compiled(h.model):
                    h.use_gates()
            return out

        return Recipe(self.name, hooks=hooks, leaves_unused=True)


STOCHASTIC_PRECISION = StochasticPrecisionAddOn()
