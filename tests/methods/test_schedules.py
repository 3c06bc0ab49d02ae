"""Two-stage, bit decay and stochastic precision: the maths at boundaries."""

import pytest
import torch

from lowbit.methods import StochasticPrecision, decay_rounds, sp_probability, two_stage_rounds
from lowbit.methods.rounds import Round
from lowbit.models import build_model
from lowbit.quant import iter_quantizers, quantize


def test_sp_probability_boundaries_default_ramp():
    total = 600  # ramp window = first 300 steps, 3 segments of 100
    p = [sp_probability(s, total) for s in (0, 99, 100, 199, 200, 299, 300, 599)]
    assert p == [0.5, 0.5, 0.75, 0.75, 0.875, 0.875, 1.0, 1.0]


def test_sp_probability_custom_and_errors():
    assert sp_probability(0, 10, [1.0]) == 1.0
    assert sp_probability(4, 10, [0.2, 1.0], ramp_fraction=1.0) == 0.2
    assert sp_probability(9, 10, [0.2, 1.0], ramp_fraction=1.0) == 0.2
    with pytest.raises(ValueError):
        sp_probability(0, 10, [], 0.5)
    with pytest.raises(ValueError):
        sp_probability(0, 10, [0.5, 1.0], 0.0)


@pytest.fixture
def qmodel():
    torch.manual_seed(0)
    return quantize(build_model("resnet20", 10), 2, 2)


@pytest.mark.parametrize("unit,n_units", [("layer", 20), ("block", 9)])
def test_sp_uniform_fraction_over_many_draws(qmodel, unit, n_units):
    sp = StochasticPrecision(qmodel, unit=unit, seed=3)
    assert len(sp.units) == n_units
    draws = 400
    total = 0.0
    for step in range(draws):  # p = 0.5 throughout the first sixth of 10_000 steps
        sp.on_step(step, 10_000)
        total += sp.last_fraction
    mean = total / draws
    # Binomial(n_units * draws, 0.5): the mean's std is 0.5 / sqrt(n * draws); 5 sigma
    assert abs(mean - 0.5) < 5 * 0.5 / (n_units * draws) ** 0.5


def test_sp_flags_follow_mask_and_epoch_end_restores(qmodel):
    sp = StochasticPrecision(qmodel, unit="layer", seed=1)
    sp.on_step(0, 100)
    for quantizers, on in zip(sp.units, sp.last_mask.tolist(), strict=True):
        assert all(q.enabled == on for q in quantizers)
    assert 0 < sp.last_fraction < 1
    sp.on_epoch_end()
    assert all(q.enabled for _, q in iter_quantizers(qmodel))
    sp.on_step(99, 100)  # p = 1 after the ramp: fully quantized
    assert sp.last_fraction == 1.0


def test_sp_is_deterministic_for_a_seed(qmodel):
    a = StochasticPrecision(qmodel, seed=5)
    b = StochasticPrecision(qmodel, seed=5)
    masks_a, masks_b = [], []
    for s in range(20):
        a.on_step(s, 1000)
        masks_a.append(a.last_mask.clone())
        b.on_step(s, 1000)
        masks_b.append(b.last_mask.clone())
    assert all(torch.equal(x, y) for x, y in zip(masks_a, masks_b, strict=True))
    c = StochasticPrecision(qmodel, seed=6)
    masks_c = []
    for s in range(20):
        c.on_step(s, 1000)
        masks_c.append(c.last_mask.clone())
    assert any(not torch.equal(x, y) for x, y in zip(masks_a, masks_c, strict=True))


def test_sp_error_selection_prefers_high_error_units(qmodel):
    sp = StochasticPrecision(qmodel, unit="layer", selection="error", seed=0)
    # Make layer 0's weights nearly binary-friendly (low error) and layer 1 high error.
    layers = [m for m in qmodel.modules() if hasattr(m, "w_quant")]
    with torch.no_grad():
        layers[0].weight.copy_(torch.sign(torch.randn_like(layers[0].weight)) * 3.0)  # ~0 error
    err = sp.unit_errors()
    assert err[0] < 0.01 < err[1:].min()
    counts = torch.zeros(len(sp.units))
    for step in range(300):
        sp.on_step(step, 100_000)  # p = 0.5 -> round(0.5 * 20) = 10 units each step
        assert int(sp.last_mask.sum()) == round(0.5 * len(sp.units))
        counts += sp.last_mask.float()
    assert counts[0] < counts[1:].mean() / 5


def test_sp_keeps_quantizers_a_round_switched_off(qmodel):
    Round(2, 32, 1, a_enabled=False).apply(qmodel)
    sp = StochasticPrecision(qmodel, seed=0)
    for s in range(5):
        sp.on_step(s, 100)
        assert not any(q.enabled for _, q in iter_quantizers(qmodel, "activation"))
    sp.on_epoch_end()
    assert not any(q.enabled for _, q in iter_quantizers(qmodel, "activation"))
    assert all(q.enabled for _, q in iter_quantizers(qmodel, "weight"))


def test_two_stage_rounds_and_modes(qmodel):
    r1, r2 = two_stage_rounds(2, 2, 3, 4)
    assert (r1.w_bits, r1.a_bits, r1.a_enabled, r1.epochs) == (2, 32, True, 3)
    assert (r2.w_bits, r2.a_bits, r2.epochs) == (2, 2, 4)
    r1.apply(qmodel)
    assert {q.bits for _, q in iter_quantizers(qmodel, "activation")} == {32}
    relu = two_stage_rounds(2, 2, 1, 1, a_mode="relu")[0]
    relu.apply(qmodel)
    assert not any(q.enabled for _, q in iter_quantizers(qmodel, "activation"))
    with pytest.raises(ValueError):
        two_stage_rounds(2, 2, 1, 1, a_mode="tanh")


def test_bit_decay_rounds_at_boundaries():
    rounds = decay_rounds([(16, 16), (8, 8), (4, 4), (2, 2)], epochs=3)
    assert [(r.w_bits, r.a_bits, r.epochs) for r in rounds] == [
        (16, 16, 3),
        (8, 8, 3),
        (4, 4, 3),
        (2, 2, 3),
    ]
    ts = decay_rounds([(8, 8), (2, 2)], 1, two_stage=True)
    assert [(r.w_bits, r.a_bits) for r in ts] == [(8, 32), (8, 8), (2, 8), (2, 2)]
    assert len(decay_rounds([(2, 2)], 5)) == 1
    with pytest.raises(ValueError, match="increase"):
        decay_rounds([(4, 4), (8, 8)], 1)
    with pytest.raises(ValueError):
        decay_rounds([], 1)
