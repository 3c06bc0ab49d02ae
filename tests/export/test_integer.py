"""The integer reference computes the fake-quant network: every code, every image.

exact: float64 on both sides (compare.exact_model), so no float error puts a value on
a rounding tie: all activation codes and all top-1 predictions must be equal.
float32: lowbit's eval-mode model against the float32 reference, as deployed: images
whose codes agree must agree to float tolerance; a tie (differing codes) spreads downstream,
so at least half the images keep every code equal (assert_float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lowbit.export import build_program, compare, exact_model, reference_runner, run_program
from lowbit.export.compare import REL_TOL
from lowbit.models import build_model
from lowbit.quant.convert import quantize
from tests.export import nets

F64 = torch.float64


def exact(model, program, batches):
    return compare(exact_model(model), batches, reference_runner(program, F64), None, F64)


def assert_exact(agr, images: int) -> None:
    assert agr.images == images
    assert agr.codes > 0 and agr.code_mismatches == 0
    assert agr.same_top1 == images
    assert agr.max_abs_diff < 1e-10 * agr.logit_scale
    assert agr.exact


def assert_float32(agr, images: int) -> None:
    assert agr.images == images
    # Ties (a value on a rounding boundary, which float32 and float64 round differently)
    # cascade downstream, so an image either matches in every code or drifts. Measured on
    # the 397 digits validation images, Intel Xeon AVX512, torch 2.14: 77.6-100 % of the
    # images have equal codes at 1 or 2 threads, with or without ATEN_CPU_CAPABILITY=default;
    # a wrong scale, fold or layout gives about 0 %. The floor is compare.py's own (half).
    assert 2 * agr.equal_codes >= images
    assert agr.equal_codes_same_top1 == agr.equal_codes  # ...and the rest agrees exactly
    assert agr.equal_codes_max_diff <= REL_TOL * agr.logit_scale
    assert agr.same_top1 >= 0.98 * images
    assert agr.ok


def assert_meaningful(model, batches) -> None:
    """Predictions follow the digits (well above 10% chance) and use many classes."""
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert (pred == labels).float().mean() > 0.2
    assert pred.unique().numel() >= 5


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_resnet20_dorefa(resnet20, val16, bits):
    model = resnet20("dorefa", bits)
    assert_meaningful(model, val16)
    program = build_program(model)
    assert_exact(exact(model, program, val16), 397)
    assert_float32(compare(model, val16, reference_runner(program)), 397)


@pytest.mark.parametrize("quantizer", ["pact", "lsq"])
@pytest.mark.parametrize("bits", [2, 4])
def test_resnet20_pact_and_lsq(resnet20, val16, quantizer, bits):
    model = resnet20(quantizer, bits)
    assert_meaningful(model, val16)
    program = build_program(model)
    kinds = {layer.act.kind for layer in program.layers()}
    assert kinds == {quantizer}
    if quantizer == "pact":  # codes m in [0, 2^k - 1], value alpha m / (2^k - 1)
        alpha = float(model.layer2[1].conv2.a_quant.alpha.detach())
        assert program.blocks[4].convs[1].act.scale == pytest.approx(alpha / (2**bits - 1))
    else:  # LSQ: signed weight codes in [-2^(k-1), 2^(k-1) - 1], value s q
        assert all(layer.w_kind == "lsq" for layer in program.layers())
        lo = min(int(layer.weight.min()) for layer in program.layers())
        hi = max(int(layer.weight.max()) for layer in program.layers())
        assert lo >= -(2 ** (bits - 1)) and hi <= 2 ** (bits - 1) - 1
    assert_exact(exact(model, program, val16), 397)
    assert_float32(compare(model, val16, reference_runner(program)), 397)


@pytest.fixture(scope="module")
def d32():
    return nets.digits(32)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_resnet18_at_32x32(d32, bits):
    model = nets.probe_resnet18(d32, bits)
    val = list(DataLoader(TensorDataset(*d32[1]), batch_size=16))[:1]  # 16 images
    program = build_program(model)
    assert len(program.layers()) == 19  # 16 block convs + 3 downsample convs
    assert sum(b.out is not None for b in program.blocks) == 7  # 8 blocks but the last
    assert_exact(exact(model, program, val), 16)


def test_weight_codes_are_the_models_quantized_weights(resnet20):
    """w_int * w_scale is the fake-quant weight W_q to float32 rounding."""
    model = resnet20("dorefa", 2)
    for layer in build_program(model).layers():
        conv = model.get_submodule(layer.name)
        with torch.no_grad():
            wq = conv.w_quant(conv.weight).double().numpy()
        assert np.abs(layer.weight * layer.w_scale - wq).max() < 1e-6
        assert set(np.unique(layer.weight)) <= {-3, -1, 1, 3}


def test_a_wrong_program_fails_the_comparison(resnet20, val16):
    """The comparison can fail: one channel's folded BN shift off, or a weight code in
    every output channel of one conv (a single code can sit in a channel whose outputs
    clip to 0 on every image: how many are dead depends on the host's float rounding)."""
    model = resnet20("dorefa", 2)
    program = build_program(model)
    program.blocks[3].convs[0].shift[5] += 0.4
    agr = exact(model, program, val16[:1])
    assert agr.code_mismatches > 0 and not agr.exact
    program = build_program(model)
    layer = program.blocks[1].convs[1]
    layer.weight[:, 0, 1, 1] = -layer.weight[:, 0, 1, 1]  # (out, in, 3, 3) codes
    assert not exact(model, program, val16[:1]).exact


def test_codes_travel_between_blocks_as_integers(resnet20, d16):
    model = resnet20("dorefa", 2)
    program = build_program(model)
    trace: dict[str, torch.Tensor] = {}
    run_program(program, d16[1][0][:8], trace)
    outs = [name for name in trace if name.endswith("out_quant")]
    assert len(outs) == 8  # 9 blocks, the last feeds the float fc
    for name in outs:
        assert trace[name].dtype == torch.int32
        assert int(trace[name].min()) >= 0 and int(trace[name].max()) <= 3
    readers = [layer.name for layer in program.layers() if layer.source]
    assert "layer2.0.downsample.0" in readers and "layer1.1.conv1" in readers


@pytest.mark.parametrize(("w_bits", "a_bits", "block_output"), [(2, 4, "quantized"), (4, 2, "fp")])
def test_mixed_bits_and_float_block_outputs(d16, val16, w_bits, a_bits, block_output):
    """W != A bit-widths, and block_output="fp" (each layer quantizes its own input,
    shortcuts carry floats): still one integer network, code for code."""
    torch.manual_seed(0)
    model = quantize(build_model("resnet20", 10, 32), w_bits, a_bits, block_output=block_output)
    nets.calibrate_bn(model, d16[0][0][:256])
    program = build_program(model)
    sources = {layer.source for layer in program.layers()}
    assert (sources == {""}) == (block_output == "fp")
    assert all(layer.w_bits == w_bits and layer.act.bits == a_bits for layer in program.layers())
    assert_exact(exact(model, program, val16[:1]), 200)
