"""The Program as an integer ONNX graph (opset 17) that onnxruntime runs on the CPU.

Not a trace of the fake-quant PyTorch model: the graph is written from the Program, so
its quantized layers are real integer operators. Each activation quantizer is
Clip / Div / Mul / Round (the fake-quant formula) then Cast to uint8 codes; each
quantized conv is ConvInteger(uint8 codes, int8 weight codes) -> int32 accumulators ->
Cast to float -> Mul(scale) -> Add(shift) (the folded BN). The stem conv and the fc
stay float (Conv, Gemm), as do Relu, the residual Add and GlobalAveragePool.
Codes are 8-bit tensors, so activations take at most 8 bits and weight codes must fit
int8 (DoReFa up to 7 bits, LSQ up to 8).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.export.program import ActQuant, Block, ExportError, IntConv, Program

OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package (pip install onnx)") from None
    return onnx


class _Graph:
    """Nodes and initializers of one graph, with generated value names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.nodes, self.inits, self.count = onnx, [], [], 0
        self.codes: dict[str, str] = {}  # quantizer name -> its uint8 codes value

    def const(self, value: np.ndarray | float, dtype: Any = np.float32) -> str:
        name = f"c{len(self.inits)}"
        array = np.asarray(value, dtype=dtype)
        self.inits.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self.count += 1
        out = f"{op_type.lower()}{self.count}"
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def channel(self, v: np.ndarray) -> str:
        return self.const(np.asarray(v, np.float32).reshape(1, -1, 1, 1))


def _codes(g: _Graph, x: str, q: ActQuant, name: str) -> str:
    """float -> uint8 codes with the fake-quant quantizer's own ops (integer.to_codes);
    `name` is the fake-quant model's quantizer (e.g. "layer1.0.out_quant")."""
    if q.bits > 8:
        raise ExportError(f"ONNX codes are uint8: {q.bits}-bit activations do not fit")
    n = g.const(float(q.levels))
    if q.kind == "clip":
        y = g.op("Mul", g.op("Clip", x, g.const(0.0), g.const(1.0)), n)
    elif q.kind == "pact":
        alpha = g.const(q.param)
        y = g.op("Mul", g.op("Div", g.op("Clip", x, g.const(0.0), alpha), alpha), n)
    else:
        y = g.op("Clip", g.op("Div", x, g.const(q.param)), g.const(0.0), n)
    g.codes[name] = g.op("Cast", g.op("Round", y), to=g.onnx.TensorProto.UINT8)
    return g.codes[name]


def _dequant(g: _Graph, codes: str, q: ActQuant) -> str:
    return g.op("Mul", g.op("Cast", codes, to=g.onnx.TensorProto.FLOAT), g.const(q.scale))


def _int_conv(g: _Graph, layer: IntConv, a: tuple[str, ActQuant | None]) -> str:
    name, quant = a
    codes = name if quant is not None and (layer.source or quant == layer.act) else None
    if codes is None:
        x = name if quant is None else _dequant(g, name, quant)
        codes = _codes(g, x, layer.act, f"{layer.name}.a_quant")
    if np.abs(layer.weight).max() > 127:
        raise ExportError(f"layer {layer.name}: weight codes do not fit int8 for ConvInteger")
    w = g.const(layer.weight, np.int8)
    acc = g.op(
        "ConvInteger",
        codes,
        w,
        g.const(0, np.uint8),
        g.const(0, np.int8),
        strides=list(layer.stride),
        pads=[*layer.padding, *layer.padding],
        dilations=list(layer.dilation),
        group=layer.groups,
        kernel_shape=list(layer.weight.shape[2:]),
    )
    y = g.op("Mul", g.op("Cast", acc, to=g.onnx.TensorProto.FLOAT), g.channel(layer.scale))
    return g.op("Add", y, g.channel(layer.shift))


def _block(g: _Graph, block: Block, a: tuple[str, ActQuant | None]) -> tuple[str, Any]:
    h = a
    for i, layer in enumerate(block.convs):
        y = _int_conv(g, layer, h)
        if i < len(block.convs) - 1:
            h = (g.op("Relu", y), None)
    if block.downsample is not None:
        shortcut = _int_conv(g, block.downsample, a)
    else:
        shortcut = a[0] if a[1] is None else _dequant(g, a[0], a[1])
    s = g.op("Relu", g.op("Add", y, shortcut))
    if block.out is None:
        return s, None
    return _codes(g, s, block.out, f"{block.name}.out_quant"), block.out


def _stem(g: _Graph, program: Program) -> str:
    st = program.stem
    y = g.op(
        "Conv", "x", g.const(st.weight), strides=list(st.stride), pads=[*st.padding, *st.padding]
    )
    y = g.op("Relu", g.op("Add", g.op("Mul", y, g.channel(st.scale)), g.channel(st.shift)))
    if st.maxpool is not None:
        k, s, p = st.maxpool
        y = g.op("MaxPool", y, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    return y


def _outputs(g: _Graph, classes: int, with_codes: bool, stem: str) -> list[Any]:
    """The "logits" output and, with codes, one uint8 output per activation quantizer
    and the float stem output "stem" (when the graph computes it)."""
    onnx = g.onnx
    f32 = onnx.TensorProto.FLOAT
    outs = [onnx.helper.make_tensor_value_info("logits", f32, ["N", classes])]
    if with_codes and stem != "stem":
        g.nodes.append(onnx.helper.make_node("Identity", [stem], ["stem"]))
        outs.append(onnx.helper.make_tensor_value_info("stem", f32, [None] * 4))
    if with_codes:
        for name, value in g.codes.items():
            g.nodes.append(onnx.helper.make_node("Identity", [value], [name]))
            uint8 = onnx.TensorProto.UINT8
            outs.append(onnx.helper.make_tensor_value_info(name, uint8, [None] * 4))
    return outs


def program_to_onnx(program: Program, with_codes: bool = False, body_only: bool = False) -> bytes:
    """The serialized ONNX model: input "x" float32 (N, 3, H, W), output "logits"
    (N, classes). For the check: `with_codes` adds every activation quantizer's uint8
    codes as an output named after the quantizer; `body_only` drops the float stem and
    takes its output "stem" (N, C, H', W') as input, so that a comparison with the
    integer reference starts from identical values."""
    onnx = _onnx()
    g, f32 = _Graph(onnx), onnx.TensorProto.FLOAT
    first = "stem" if body_only else _stem(g, program)
    a: tuple[str, ActQuant | None] = (first, None)
    for block in program.blocks:
        a = _block(g, block, a)
    x = a[0] if a[1] is None else _dequant(g, a[0], a[1])
    pooled = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)
    fc = [pooled, g.const(program.fc_weight), g.const(program.fc_bias)]
    g.nodes.append(onnx.helper.make_node("Gemm", fc, ["logits"], transB=1))
    shape = ["N", int(program.stem.weight.shape[0]) if body_only else 3, "H", "W"]
    inp = onnx.helper.make_tensor_value_info(first if body_only else "x", f32, shape)
    outs = _outputs(g, int(program.fc_weight.shape[0]), with_codes, first)
    graph = onnx.helper.make_graph(g.nodes, "lowbit_integer", [inp], outs, g.inits)
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="lowbit"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_runner(data: bytes) -> Any:
    """The graph's input (images float32 (N, 3, H, W), or the stem output) -> (logits
    (N, classes), {quantizer: codes}) on one onnxruntime CPU thread; the codes are the
    graph's other outputs (with_codes)."""
    try:
        import onnxruntime as ort
    except ImportError:
        msg = "checking an ONNX export needs onnxruntime (pip install onnxruntime)"
        raise ExportError(msg) from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inp = session.get_inputs()[0].name  # "x", or "stem" for a body_only graph

    def run(x: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outs = session.run(names, {inp: np.ascontiguousarray(np.asarray(x), np.float32)})
        return outs[0], dict(zip(names[1:], outs[1:], strict=True))

    return run
