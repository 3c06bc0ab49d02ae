"""The integer ONNX graph: ConvInteger layers, run by onnxruntime on the CPU, equal to
the integer reference and to lowbit's eval-mode logits."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lowbit.export import build_program, compare, onnx_runner, program_to_onnx, reference_runner
from lowbit.export.integer import run_stem
from lowbit.export.program import ExportError
from lowbit.export.verify import verify
from lowbit.models import build_model
from lowbit.quant.convert import quantize
from tests.export import nets
from tests.export.test_integer import assert_float32

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def ops(data: bytes) -> Counter:
    return Counter(n.op_type for n in onnx.load_from_string(data).graph.node)


def body_runner(program):
    body = onnx_runner(program_to_onnx(program, with_codes=True, body_only=True))
    return lambda x: body(run_stem(program, x))


@pytest.mark.parametrize(("quantizer", "bits"), [("dorefa", 2), ("dorefa", 4), ("pact", 4)])
def test_resnet20_graph(resnet20, val16, quantizer, bits):
    model = resnet20(quantizer, bits)
    program = build_program(model)
    data = program_to_onnx(program)
    count = ops(data)
    # every quantized conv is integer; only the stem conv and the fc are float
    assert count["ConvInteger"] == 20 and count["Conv"] == 1 and count["Gemm"] == 1
    # 10 layers quantize their own input (layer1.0.conv1 and every conv2), 10 read a
    # block's out_quant codes (the next conv1s and 2 downsample convs): 10 + 8 roundings
    assert count["Round"] == 10 + 8
    # the graph runs the program: fed the same stem output, every code is equal
    same = compare(reference_runner(program), val16, body_runner(program))
    assert same.same_program and same.codes > 0
    # and it reproduces lowbit's float32 eval-mode logits (ties aside, compare.py)
    debug = onnx_runner(program_to_onnx(program, with_codes=True))
    agr = compare(model, val16, lambda x: _no_stem(debug, x))
    assert_float32(agr, 397)


def _no_stem(run, x):
    logits, codes = run(x.numpy())
    codes.pop("stem")
    return logits, codes


def test_block_outputs_are_quantized_in_the_graph(resnet20):
    program = build_program(resnet20("dorefa", 2))
    graph = onnx.load_from_string(program_to_onnx(program, with_codes=True)).graph
    names = [o.name for o in graph.output]
    assert names[0] == "logits" and "stem" in names
    assert sum(n.endswith(".out_quant") for n in names) == 8
    assert sum(n.endswith(".a_quant") for n in names) == 10
    assert [i.name for i in graph.input] == ["x"]


def test_resnet18_graph_runs_the_program():
    d32 = nets.digits(32)
    model = nets.probe_resnet18(d32, 2)
    program = build_program(model)
    assert ops(program_to_onnx(program))["ConvInteger"] == 19
    val = list(DataLoader(TensorDataset(*d32[1]), batch_size=8))[:1]
    same = compare(reference_runner(program), val, body_runner(program))
    assert same.same_program and same.images == 8


def test_verify_runs_all_three_comparisons(resnet20, val16):
    model = resnet20("dorefa", 2)
    program = build_program(model)
    checked = verify(model, "onnx", program_to_onnx(program), program, val16[:1])
    assert checked.exact.exact and checked.graph.same_program
    assert checked.deployed.images == 200
    lines = checked.describe("onnx")
    assert len(lines) == 3 and "float64" in lines[0] and "same inputs" in lines[1]


def test_too_many_bits_for_uint8_codes():
    torch.manual_seed(0)
    model = quantize(build_model("resnet20", 10, 32), 4, 9).eval()
    with pytest.raises(ExportError, match="9-bit activations do not fit"):
        program_to_onnx(build_program(model))
