"""The npz file: packed k-bit codes, exact round trip, sizes against float32."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lowbit.export import build_program, program_from_npz, program_to_npz, run_program
from lowbit.export.pack import packed_size
from lowbit.export.program import ExportError


@pytest.mark.parametrize(("quantizer", "bits"), [("dorefa", 2), ("dorefa", 3), ("lsq", 4)])
def test_round_trip_is_exact(resnet20, d16, quantizer, bits):
    program = build_program(resnet20(quantizer, bits))
    back = program_from_npz(program_to_npz(program))
    for a, b in zip(program.layers(), back.layers(), strict=True):
        assert a.name == b.name and np.array_equal(a.weight, b.weight)
        assert np.array_equal(a.scale, b.scale) and np.array_equal(a.shift, b.shift)
        assert a.act == b.act and a.source == b.source and a.w_scale == b.w_scale
    x = d16[1][0][:32]
    assert torch.equal(run_program(program, x), run_program(back, x))


@pytest.mark.parametrize("bits", [2, 4])
def test_codes_are_packed_and_the_file_is_small(resnet20, bits):
    model = resnet20("dorefa", bits)
    program = build_program(model)
    data = program_to_npz(program)
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        for layer in program.layers():
            codes = z[f"{layer.name}.codes"]
            assert codes.dtype == np.uint8
            assert codes.size == packed_size(layer.weight.size, bits)
        packed = sum(z[f"{layer.name}.codes"].size for layer in program.layers())
    quantized = sum(layer.weight.size for layer in program.layers())
    assert packed == pytest.approx(quantized * bits / 8, abs=len(program.layers()))
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert len(data) < float_bytes * (bits / 32) * 1.6  # codes + float scales, stem, fc


def test_a_foreign_npz_is_one_error_line(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ExportError, match="cannot read .* as a lowbit integer export"):
        program_from_npz(path)
    with pytest.raises(ExportError, match="cannot read npz data"):
        program_from_npz(b"not a zip")
