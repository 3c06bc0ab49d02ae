"""Model transform and precision control (paper §3.1 layer policy).

`quantize(model, w_bits, a_bits)` returns a new model in which every nn.Conv2d and
nn.Linear becomes a QuantConv2d / QuantLinear, except the layers in `keep_fp`
(default: the first conv and the last fc). Downsample 1x1 convs are quantized;
BatchNorm and the residual additions stay full precision.

Activation quantizers sit at the input of each quantized layer. The ReLU in front of
it is kept: clip(relu(a), 0, 1) == clip(a, 0, 1) and the gradients agree except at
a == 0, so the quantized layer sees exactly the paper's q_k(clip(a)).

Block outputs (`block_output="quantized"`, the authors' code): the output of every
post-activation residual block but the last passes an activation quantizer of its own,
`<block>.out_quant`, applied by a forward hook after the block's final ReLU (again
q_k(clip(relu(s))) == q_k(clip(s))), so the next block's shortcut and first conv both
read k-bit values. Those readers' own input quantizers become `QuantizedInput`
(identities that name their source). `"fp"` keeps the residual stream in full
precision: each quantized layer rounds its own input, shortcuts carry floats.
The output of the very last block feeds the full-precision fc and stays a plain ReLU
(lowbit.models.blocks).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping

from torch import Tensor, nn

from lowbit.errors import CheckpointError, ConfigError
from lowbit.quant.functional import MAX_BITS, check_bits
from lowbit.quant.layers import QUANT_LAYERS, QuantConv2d, QuantizedInput, QuantLinear
from lowbit.quant.quantizers import Quantizer, make_quantizers

QuantLayer = QuantConv2d | QuantLinear
BLOCK_OUTPUTS = ("quantized", "fp")


def default_keep_fp(model: nn.Module) -> list[str]:
    """Names of the first nn.Conv2d and the last nn.Linear, in registration order."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    fcs = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return convs[:1] + fcs[-1:]


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize(
    model: nn.Module,
    w_bits: int = MAX_BITS,
    a_bits: int = MAX_BITS,
    keep_fp: Iterable[str] | None = None,
    quantizer: str = "dorefa",
    block_output: str = "quantized",
) -> nn.Module:
    """Return a copy of `model` with quantized conv / fc layers (the input is untouched).

    Example:
        >>> from lowbit.models import build_model
        >>> q = quantize(build_model("resnet20", num_classes=10), w_bits=2, a_bits=2)
        >>> sum(isinstance(m, QuantConv2d) for m in q.modules())  # 21 convs - the first
        20
        >>> sum(name.endswith("out_quant") for name, _ in iter_quantizers(q))  # 9 blocks - 1
        8
    """
    w_bits, a_bits = check_bits(w_bits, "w_bits"), check_bits(a_bits, "a_bits")
    if block_output not in BLOCK_OUTPUTS:
        raise ConfigError(f"block_output must be one of {BLOCK_OUTPUTS}, got {block_output!r}")
    model = copy.deepcopy(model)
    keep = default_keep_fp(model) if keep_fp is None else list(keep_fp)
    candidates = [n for n, m in model.named_modules() if type(m) in QUANT_LAYERS]
    unknown = sorted(set(keep) - set(candidates))
    if unknown:
        raise ConfigError(
            f"keep_fp names no conv/linear layer: {', '.join(unknown)}; "
            f"layers are: {', '.join(candidates)}"
        )
    for name in candidates:
        if name in keep:
            continue
        layer = model.get_submodule(name)
        wq, aq = make_quantizers(quantizer, w_bits, a_bits)
        _swap(model, name, QUANT_LAYERS[type(layer)].from_float(layer, wq, aq))
    if block_output == "quantized":
        _quantize_block_outputs(model, quantizer, a_bits)
    return model


def clipped_float(model: nn.Module, block_output: str = "quantized") -> nn.Module:
    """A copy of `model` whose activations are clipped to [0, 1] wherever `quantize`
    would clip them, with float weights and nothing rounded: the FP network that matches
    the quantizers (common.fp_start: clip). Its state dict keys are the float model's,
    so its checkpoint loads into the quantized network and back.

    >>> from lowbit.models import build_model
    >>> c = clipped_float(build_model("resnet20", num_classes=10))
    >>> sorted({(q.bits, q.enabled) for _, q in iter_quantizers(c, "activation")})
    [(32, True)]
    >>> {q.enabled for _, q in iter_quantizers(c, "weight")}
    {False}
    """
    clipped = quantize(model, MAX_BITS, MAX_BITS, block_output=block_output)
    for _, q in iter_quantizers(clipped, "weight"):
        q.enabled = False
    return clipped


def _quantize_output(block: nn.Module, _args: object, output: Tensor) -> Tensor:
    """Forward hook: the block's output through its own activation quantizer."""
    return block.out_quant(output)


def _quantize_block_outputs(model: nn.Module, quantizer: str, a_bits: int) -> None:
    from lowbit.models.blocks import block_outputs  # models sit above quant

    for name, readers in block_outputs(model):
        block = model.get_submodule(name)
        block.out_quant = make_quantizers(quantizer, MAX_BITS, a_bits)[1]
        block.register_forward_hook(_quantize_output)
        for reader in readers:
            layer = model.get_submodule(reader)
            if isinstance(layer, QuantConv2d | QuantLinear):
                layer.a_quant = QuantizedInput(name)


def input_quantizer(model: nn.Module, layer: QuantLayer) -> Quantizer:
    """The quantizer that rounds `layer`'s input: its own, or its source block's."""
    if isinstance(layer.a_quant, QuantizedInput):
        return model.get_submodule(layer.a_quant.source).out_quant
    return layer.a_quant


def iter_quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, QuantConv2d | QuantLinear):
            yield name, m


def iter_quantizers(model: nn.Module, role: str | None = None) -> Iterator[tuple[str, Quantizer]]:
    """(qualified name, quantizer) pairs; role "weight" or "activation" filters."""
    for name, m in model.named_modules():
        if isinstance(m, Quantizer) and (role is None or m.role == role):
            yield name, m


def set_bits(model: nn.Module, w_bits: int | None = None, a_bits: int | None = None) -> None:
    """Set the bit-width of every weight and/or activation quantizer of `model`."""
    for role, bits in (("weight", w_bits), ("activation", a_bits)):
        if bits is None:
            continue
        bits = check_bits(bits, f"{role[0]}_bits")
        for _, q in iter_quantizers(model, role):
            q.bits = bits


@contextlib.contextmanager
def quantization(
    model: nn.Module, weights: bool | None = None, activations: bool | None = None
) -> Iterator[nn.Module]:
    """Temporarily enable (True) or disable (False) weight / activation quantizers.

    with quantization(model, weights=False, activations=False):
        fp_logits = model(x)       # the float network of the same parameters
    """
    saved = {name: q.enabled for name, q in iter_quantizers(model)}
    try:
        for role, flag in (("weight", weights), ("activation", activations)):
            if flag is not None:
                for _, q in iter_quantizers(model, role):
                    q.enabled = flag
        yield model
    finally:
        for name, q in iter_quantizers(model):
            q.enabled = saved[name]


def quant_state(model: nn.Module) -> dict[str, dict[str, int | bool]]:
    """Bits and flags of every quantizer: saved in checkpoints beside the state dict."""
    return {name: {"bits": q.bits, "enabled": q.enabled} for name, q in iter_quantizers(model)}


def load_quant_state(model: nn.Module, state: Mapping[str, Mapping[str, int | bool]]) -> None:
    quantizers = dict(iter_quantizers(model))
    if set(state) != set(quantizers):
        missing = sorted(set(quantizers) - set(state))[:3]
        extra = sorted(set(state) - set(quantizers))[:3]
        raise CheckpointError(
            f"quantizer state does not match the model (missing {missing}, unexpected {extra})"
        )
    for name, s in state.items():
        quantizers[name].bits = int(s["bits"])
        quantizers[name].enabled = bool(s["enabled"])


def load_float_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a float model's state dict into a quantized model.

    Only the quantizers' own parameters (PACT alpha, LSQ step) may be missing; any other
    mismatch is an error naming the keys.
    """
    result = model.load_state_dict(dict(state), strict=False)
    quant_keys = {
        f"{name}.{k}" for name, q in iter_quantizers(model) for k in q.state_dict(keep_vars=True)
    }
    missing = [k for k in result.missing_keys if k not in quant_keys]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            "state dict does not fit the model: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
