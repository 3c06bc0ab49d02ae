"""The check of an export on validation data: three comparisons (compare.py).

1. exact: the integer program, as read back from the written bytes (npz) or as built
   (ONNX), against the fake-quant model in float64: every activation code of every
   image equal, logits to ~1e-12. Fails the check otherwise.
2. graph (ONNX only): the ONNX graph without its float stem, fed the integer
   reference's stem output, against the float32 integer reference: the same codes
   everywhere, logits to float32 tolerance; the full graph's stem output to 1e-4 of
   the reference's; the written graph's logits bitwise those of the debug graph (the
   one that also outputs its codes). Fails the check otherwise.
3. deployed: the written file, run by its runtime in float32, against lowbit's float32
   eval-mode model: top-1 agreement and max logit difference, reported. Rounding ties
   between two float32 computations (compare.py) make this a measurement, not a proof.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lowbit.export.compare import Agreement, Runner, compare, exact_model, reference_runner
from lowbit.export.integer import run_stem
from lowbit.export.npz import program_from_npz
from lowbit.export.onnx_graph import onnx_runner, program_to_onnx
from lowbit.export.program import ExportError, Program

Batches = Iterable[tuple[Tensor, Tensor]]
STEM_TOL = 1e-4  # relative to max(1, max |stem output|)


@dataclass
class Verification:
    exact: Agreement
    deployed: Agreement
    graph: Agreement | None = None  # ONNX only

    def describe(self, fmt: str) -> list[str]:
        lines = [self.exact.describe("integer program vs fake-quant model, float64")]
        if self.graph is not None:
            lines.append(self.graph.describe("ONNX graph vs integer reference, same inputs"))
        lines.append(self.deployed.describe(f"{fmt} export vs lowbit's float32 model"))
        return lines


def _fail(agr: Agreement, what: str) -> None:
    raise ExportError(f"check failed: {agr.describe(what)}")


def _onnx_graph(program: Program, batches: Batches, max_images: int | None) -> Agreement:
    body = onnx_runner(program_to_onnx(program, with_codes=True, body_only=True))
    graph = compare(
        reference_runner(program), batches, lambda x: body(run_stem(program, x)), max_images
    )
    if not graph.same_program:
        _fail(graph, "the ONNX graph computes another program than the integer reference")
    return graph


def _onnx_deployed(program: Program, data: bytes) -> Runner:
    """The written graph as a Runner, its stem and logits checked against the debug graph's."""
    debug = onnx_runner(program_to_onnx(program, with_codes=True))
    plain = onnx_runner(data)

    def run(x: Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits, codes = debug(x.numpy())
        stem = torch.from_numpy(codes.pop("stem"))
        ref = run_stem(program, x)
        if float((stem - ref).abs().max()) > STEM_TOL * max(1.0, float(ref.abs().max())):
            raise ExportError("check failed: the ONNX stem differs from the program's stem")
        if not np.array_equal(plain(x.numpy())[0], logits):
            raise ExportError("check failed: the written ONNX graph differs from its debug twin")
        return logits, codes

    return run


def verify(
    model: nn.Module,
    fmt: str,
    data: bytes,
    program: Program,
    batches: Batches,
    max_images: int | None = None,
) -> Verification:
    """Run the check's comparisons; ExportError with one line when a proof fails."""
    checked = program_from_npz(data) if fmt == "npz" else program
    f64 = torch.float64
    exact = compare(exact_model(model), batches, reference_runner(checked, f64), max_images, f64)
    if not exact.exact:
        _fail(exact, "the integer program differs from the fake-quant model (float64)")
    if fmt == "npz":
        deployed = compare(model, batches, reference_runner(checked), max_images)
        return Verification(exact, deployed)
    graph = _onnx_graph(program, batches, max_images)
    deployed = compare(model, batches, _onnx_deployed(program, data), max_images)
    return Verification(exact, deployed, graph)
