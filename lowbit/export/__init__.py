"""Integer export of trained low-bit networks: npz (packed k-bit codes) and ONNX.

    result = export_run(Path("runs/direct/w2a2"), "npz", check=True)
    print(result.describe())

build_program turns a quantized ResNet into a Program (integer weight codes, activation
quantizers, BN folded into per-channel scale / shift); run_program is its integer
reference inference; check_layers audits the layer policy. See docs/export.md.
onnx / onnxruntime are imported only by the ONNX writer and its check.
"""

from lowbit.export.build import build_program
from lowbit.export.check import LayerCheck, check_layers, format_check, require_integer
from lowbit.export.command import ExportResult, export_run
from lowbit.export.compare import Agreement, compare, exact_model, model_runner, reference_runner
from lowbit.export.integer import run_program
from lowbit.export.npz import program_from_npz, program_to_npz
from lowbit.export.onnx_graph import onnx_runner, program_to_onnx
from lowbit.export.program import ExportError, Program
from lowbit.export.run import load_run
from lowbit.export.verify import Verification, verify

__all__ = [
    "Agreement",
    "ExportError",
    "ExportResult",
    "LayerCheck",
    "Program",
    "Verification",
    "build_program",
    "check_layers",
    "compare",
    "exact_model",
    "export_run",
    "format_check",
    "load_run",
    "model_runner",
    "onnx_runner",
    "program_from_npz",
    "program_to_npz",
    "program_to_onnx",
    "reference_runner",
    "require_integer",
    "run_program",
    "verify",
]
