"""Agreement of an export with lowbit's eval-mode fake-quant model, image by image.

Both sides report the codes of every activation quantizer, so agreement is measured
at two levels: the codes (the integer network's inputs at each quantized layer), and
the logits. Two comparisons:

- exact: the fake-quant network in float64 with its weight levels exact
  (`exact_model`, read off the model's own weight quantizers) against the integer
  reference with float64 rescales. No value lands on a rounding tie by float error, so
  every code of every image must be equal and the logits equal to ~1e-12: the integer
  network *is* the fake-quant network.
- float32 (as deployed): lowbit's float32 model against the export as its runtime runs
  it. The two round values computed in different float orders (float conv + BN vs
  exact int32 sums + folded rescale), so a value within ~1e-6 of a rounding boundary
  can land on the neighbouring code, and that tie changes what follows it. There, the
  images whose codes all agree must agree to float tolerance, and ties must stay rare.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lowbit.export.codes import act_spec, weight_codes
from lowbit.export.integer import run_program
from lowbit.export.program import Program
from lowbit.quant.convert import iter_quantizers
from lowbit.quant.layers import QuantConv2d, QuantLinear

# images (N, 3, H, W) -> (logits (N, classes), codes by quantizer name, each (N, ...))
Runner = Callable[[Tensor], tuple[Tensor | np.ndarray, dict[str, Tensor | np.ndarray]]]
REL_TOL = 1e-4  # float32 logits, relative to max(1, max |logit|), on equal-code images
EXACT_TOL = 1e-9  # float64 logits, relative
MAX_TIE_RATE = 1e-2  # fraction of activation codes allowed to differ (rounding ties)


@dataclass
class Agreement:
    images: int = 0
    same_top1: int = 0
    max_abs_diff: float = 0.0  # logits, over every image and class
    logit_scale: float = 1.0  # max(1, max |logit| of the model)
    equal_codes: int = 0  # images whose activation codes all agree
    equal_codes_same_top1: int = 0
    equal_codes_max_diff: float = 0.0  # max |logit difference| over those images
    codes: int = 0  # activation codes compared
    code_mismatches: int = 0
    model_correct: int = 0  # top-1 hits against the labels: the fake-quant model
    export_correct: int = 0  # and the export

    @property
    def exact(self) -> bool:
        """Every code and every top-1 equal, logits equal to float64 rounding."""
        return (
            self.images > 0
            and self.code_mismatches == 0
            and self.same_top1 == self.images
            and self.max_abs_diff <= EXACT_TOL * self.logit_scale
        )

    @property
    def same_program(self) -> bool:
        """Every code and every top-1 equal, logits to float32 tolerance: two runtimes of
        one program fed identical inputs."""
        return (
            self.images > 0
            and self.code_mismatches == 0
            and self.same_top1 == self.images
            and self.max_abs_diff <= REL_TOL * self.logit_scale
        )

    @property
    def ok(self) -> bool:
        """Same integer network: most images have equal codes, those agree to float
        tolerance, and ties (differing codes) are rare. A wrong scale, fold or layout
        moves codes on nearly every image."""
        return (
            self.images > 0
            and 2 * self.equal_codes >= self.images
            and self.equal_codes_same_top1 == self.equal_codes
            and self.equal_codes_max_diff <= REL_TOL * self.logit_scale
            and self.code_mismatches <= MAX_TIE_RATE * max(self.codes, 1)
        )

    def describe(self, what: str) -> str:
        n = max(self.images, 1)
        return (
            f"{what}: top-1 equal on {self.same_top1}/{self.images} images, max |logit "
            f"difference| {self.max_abs_diff:.3g} ({self.equal_codes_max_diff:.3g} on the "
            f"{self.equal_codes} images whose activation codes all agree); activation codes "
            f"equal {self.codes - self.code_mismatches}/{self.codes}; top-1 accuracy "
            f"{100 * self.model_correct / n:.2f}% (model), {100 * self.export_correct / n:.2f}% "
            "(export)"
        )


@contextlib.contextmanager
def fake_codes(model: nn.Module, store: dict[str, Tensor]) -> Iterator[None]:
    """Forward hooks that record each activation quantizer's output as int32 codes."""

    def hook(name: str) -> Callable[..., None]:
        def record(q: nn.Module, _inp: object, out: Tensor) -> None:
            store[name] = torch.round(out / act_spec(q).scale).to(torch.int32)

        return record

    handles = [q.register_forward_hook(hook(n)) for n, q in iter_quantizers(model, "activation")]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def reference_runner(program: Program, dtype: torch.dtype = torch.float32) -> Runner:
    """The integer reference as a Runner (float parts in `dtype`)."""

    def run(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        trace: dict[str, Tensor] = {}
        return run_program(program, x, trace, dtype), trace

    return run


def exact_model(model: nn.Module) -> nn.Module:
    """A float64 copy of `model` whose quantized layers hold their exact weight levels
    (float32's 2 q / n - 1 is off by an ulp) with the weight quantizer switched off;
    activation quantizers, BN and fc are the model's, in float64. The levels come from
    the model's own quantizer output, not from a Program, so a wrong program (or a
    wrong npz) cannot agree with it by construction."""
    exact = copy.deepcopy(model).double().eval()
    for name, layer in model.named_modules():
        if isinstance(layer, QuantConv2d | QuantLinear) and layer.w_quant.enabled:
            w_int, _, w_scale = weight_codes(layer.w_quant, layer.weight, name)
            twin = exact.get_submodule(name)
            twin.weight.data = torch.from_numpy(w_int.astype(np.float64) * w_scale)
            twin.w_quant.enabled = False
    return exact


def _update(agr: Agreement, ref: Tensor, out: Tensor, y: Tensor, differ: Tensor) -> None:
    same = ref.argmax(1) == out.argmax(1)  # (N,)
    diff = (ref - out).abs().amax(1)  # (N,)
    equal = differ == 0
    agr.images += len(y)
    agr.same_top1 += int(same.sum())
    agr.max_abs_diff = max(agr.max_abs_diff, float(diff.max()))
    agr.logit_scale = max(agr.logit_scale, float(ref.abs().max()))
    agr.equal_codes += int(equal.sum())
    agr.equal_codes_same_top1 += int((same & equal).sum())
    if bool(equal.any()):
        agr.equal_codes_max_diff = max(agr.equal_codes_max_diff, float(diff[equal].max()))
    agr.model_correct += int((ref.argmax(1) == y).sum())
    agr.export_correct += int((out.argmax(1) == y).sum())


def model_runner(model: nn.Module) -> Runner:
    """lowbit's fake-quant model (eval mode) as a Runner: its codes come from hooks."""

    def run(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        model.eval()
        codes: dict[str, Tensor] = {}
        with fake_codes(model, codes):
            return model(x), codes

    return run


@torch.no_grad()
def compare(
    model: nn.Module | Runner,
    batches: Iterable[tuple[Tensor, Tensor]],
    runner: Runner,
    max_images: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Agreement:
    """Compare `model` (a fake-quant model, or any Runner: the reference side) with
    `runner` over (x, y) batches, images cast to `dtype`. Every code `runner` reports
    is compared with the reference side's code of the same quantizer."""
    left = model_runner(model) if isinstance(model, nn.Module) else model
    agr = Agreement()
    for x, y in batches:
        if max_images is not None:
            x, y = x[: max_images - agr.images], y[: max_images - agr.images]
        if len(y) == 0:
            break
        x = x.to(dtype).contiguous()
        ref, ref_codes = left(x)
        logits, codes = runner(x)
        differ = torch.zeros(len(y), dtype=torch.int64)  # (N,) mismatching codes per image
        for name, c in codes.items():
            c = torch.as_tensor(c).to(torch.int32)
            agr.codes += c.numel()
            differ += (c != ref_codes[name]).flatten(1).sum(1)
        agr.code_mismatches += int(differ.sum())
        _update(agr, torch.as_tensor(ref).double(), torch.as_tensor(logits).double(), y, differ)
    return agr
