"""Mixed precision and the paper pipelines' bit decay from 16 bits.

bf16 holds 8-bit DoReFa activations but not 16-bit ones (lowbit.quant.precision): their
65,536 levels collide when autocast casts them to bf16 at the next conv. The quantizers
compute them exactly in fp32, so a round at such bit-widths trains in fp32 while the
other rounds keep the mixed precision. Every shipped params.yaml therefore loads with
bf16 (and fp16, on a CUDA device) for every stage at every bit-width it runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lowbit import engine
from lowbit.config import QUANT_STAGES, TRAINING_STAGES, load_config, stage_bits
from lowbit.models import build_model
from lowbit.quant import quantize, set_bits
from lowbit.quant.precision import held_precision, levels_hold

ROOT = Path(__file__).resolve().parents[2]
PARAMS = sorted([ROOT / "params.yaml", *ROOT.glob("pipeline/*/params*.yaml")])
CPU = torch.device("cpu")


def _bits(params: Path) -> list[int | None]:
    """The bit-widths the pipeline's dvc.yaml runs its quantized stages at."""
    raw = yaml.safe_load(params.read_text()) or {}
    pipe = raw.get("pipeline") or {}
    return sorted({*pipe.get("bits", [2, 4]), *pipe.get("ts_pq_kd_bits", [])})


@pytest.mark.parametrize("precision,device", [("bf16", "auto"), ("fp16", "cuda")])
@pytest.mark.parametrize("params", PARAMS, ids=[str(p.relative_to(ROOT)) for p in PARAMS])
def test_every_shipped_pipeline_loads_in_mixed_precision(params, precision, device):
    sets = [f"common.precision={precision}", f"common.device={device}"]
    sixteen = False
    for stage in TRAINING_STAGES:
        for bits in _bits(params) if stage in QUANT_STAGES else [None]:
            cfg = load_config(stage, params, sets, w_bits=bits, a_bits=bits)
            assert cfg.common.precision == precision
            if stage in QUANT_STAGES:
                sixteen |= 16 in stage_bits(cfg.params)
    if "cifar100" in params.parent.name or "imagenet" in params.parent.name:
        assert sixteen  # these pipelines decay from 16 bits, the case that used to fail


def _net(bits: int) -> nn.Module:
    torch.manual_seed(0)
    model = quantize(build_model("resnet20", 10, 16), bits, bits).eval()
    return model


def test_rounds_past_the_limit_run_in_fp32_and_the_others_stay_mixed():
    model = _net(16)
    assert not levels_hold(16, torch.bfloat16, "activation")
    assert held_precision(model, "bf16") == "fp32"
    with pytest.warns(RuntimeWarning, match="trains and evaluates in fp32"):
        t = engine.make_trainee("student", model, engine.OptimSpec(), CPU, _ex("bf16"))
    assert t.precision == "fp32" and t.scaler is None
    for bits in (8, 4, 2):  # DoReFa holds 8-bit activations and 9-bit weights in bf16
        set_bits(model, bits, bits)
        assert engine.make_trainee("s", model, engine.OptimSpec(), CPU, _ex("bf16")).precision == (
            "bf16"
        )
    set_bits(model, 9, 9)  # 9-bit activations collide in bf16, 9-bit weights do not
    assert held_precision(model, "bf16") == "fp32" and held_precision(model, "fp16") == "fp16"
    set_bits(model, 16, 32)  # weights only (TS stage 1): 16-bit weights past bf16 too
    assert held_precision(model, "bf16") == "fp32"
    assert held_precision(
        quantize(build_model("resnet20", 10, 16), 8, 8, quantizer="lsq"), "bf16"
    ) == (
        "fp32"  # LSQ's 8-bit activations collide in bf16 (its limit is 7)
    )


def _ex(precision: str) -> engine.Execution:
    return engine.Execution(channels_last=False, precision=precision)


def test_a_16bit_round_under_bf16_evaluates_exactly_as_fp32():
    """The evaluation of a 16-bit network asked for bf16 is the fp32 evaluation, bit for
    bit: the same autocast-free path, so the 16-bit levels reach every conv unmerged."""
    model = _net(16)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g))]
    fp32 = engine.evaluate(model, batches, CPU, _ex("fp32"))
    bf16 = engine.evaluate(model, batches, CPU, _ex("bf16"))
    assert bf16 == fp32
    set_bits(model, 4, 4)  # a 4-bit round keeps bf16: another (rounded) loss
    assert (
        engine.evaluate(model, batches, CPU, _ex("bf16"))["loss"]
        != engine.evaluate(model, batches, CPU, _ex("fp32"))["loss"]
    )
