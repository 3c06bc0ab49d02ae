"""`lowbit export RUN_DIR [--format onnx|npz] [--out PATH] [--check]` as one function.

export_run loads the run's network, audits every layer (check.py), builds the integer
program, serialises it, and, with check, proves on the run's validation set that the
export computes what lowbit's fake-quant model computes. Only then is the file written,
atomically (temp file + rename): a failed export leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lowbit.checkpoint import atomic_write_bytes, unwritable
from lowbit.export.build import build_program
from lowbit.export.check import LayerCheck, check_layers, format_check, require_integer
from lowbit.export.npz import program_to_npz
from lowbit.export.onnx_graph import program_to_onnx
from lowbit.export.program import Program
from lowbit.export.run import LoadedRun, load_run, output_path, validation_dir
from lowbit.export.verify import Verification, verify

CHECK_BATCH = 64


@dataclass
class ExportResult:
    path: Path
    fmt: str
    size_bytes: int  # the written file
    checkpoint_bytes: int  # the run's model.pt (float32 weights and quantizer state)
    layers: list[LayerCheck]
    verification: Verification | None = None  # with check, when the validation data is there
    notes: list[str] = field(default_factory=list)
    checked: bool = False

    @property
    def ratio(self) -> float:
        """How many times smaller than the float checkpoint."""
        return self.checkpoint_bytes / max(self.size_bytes, 1)

    def describe(self, layers: bool | None = None) -> str:
        """What the CLI prints: the per-layer table (default: with check), the
        agreement, the size against the float checkpoint."""
        lines = [format_check(self.layers)] if (self.checked if layers is None else layers) else []
        if self.verification is not None:
            lines += self.verification.describe(self.fmt)
        lines += self.notes
        lines.append(
            f"wrote {self.path} ({self.size_bytes} bytes; the float checkpoint model.pt "
            f"is {self.checkpoint_bytes} bytes, {self.ratio:.1f}x larger)"
        )
        return "\n".join(lines)


def _val_batches(run: LoadedRun) -> Iterable[tuple[torch.Tensor, torch.Tensor]] | None:
    from lowbit.data import build_loaders

    data_dir = validation_dir(run)
    if data_dir is None:
        return None
    augment = str(run.config.get("common", {}).get("augment", "auto"))
    _, val = build_loaders(data_dir, CHECK_BATCH, workers=0, augment=augment, backend="torch")
    return val


def _verify(
    run: LoadedRun, fmt: str, data: bytes, program: Program, max_images: int | None
) -> tuple[Verification | None, str]:
    batches = _val_batches(run)
    if batches is None:
        return None, "validation data not found (run.json's data_dir): agreement not checked"
    return verify(run.model, fmt, data, program, batches, max_images), ""


def export_run(
    run_dir: Path,
    fmt: str = "npz",
    out: Path | None = None,
    check: bool = False,
    max_images: int | None = None,
) -> ExportResult:
    """Export a quantized run's network as `fmt` ("npz" or "onnx") to `out` (default
    <runs>/../exports/<stage>-<variant>.<fmt>). With `check`, also compare the export
    with the fake-quant model on the run's validation set (the first `max_images`).

    Raises a LowbitError subclass with one line for bad input (ConfigError: format,
    output path; CheckpointError: unreadable or foreign model.pt; ExportError: a
    full-precision run, a layer that is not integer-only, a failed check).
    """
    run = load_run(run_dir)
    path = output_path(run, fmt, out)
    rows = check_layers(run.model)
    require_integer(rows)
    program = build_program(run.model, {**run.arch, "stage": run.stage})
    data = program_to_npz(program) if fmt == "npz" else program_to_onnx(program)
    checked, note = _verify(run, fmt, data, program, max_images) if check else (None, "")
    try:
        atomic_write_bytes(path, data)
    except OSError as e:  # e.g. the folder went away or turned read-only since output_path
        raise unwritable(path, e, "--out") from None
    size = run.checkpoint.stat().st_size
    notes = [note] if note else []
    return ExportResult(path, fmt, len(data), size, rows, checked, notes, checked=check)
