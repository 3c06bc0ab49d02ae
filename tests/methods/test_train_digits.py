"""Each method trains a W2A2 ResNet-20 on digits, from a briefly pretrained FP network
(the paper's setting), to well above chance (10 %)."""

import pytest
import torch

from lowbit import engine
from lowbit.methods import (
    JointDistillation,
    StochasticPrecision,
    decay_rounds,
    direct_rounds,
    two_stage_rounds,
)
from lowbit.methods.joint_distill import KDWeights
from lowbit.models import build_model
from lowbit.quant import quantize

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fp_state(digits, tmp_path_factory):
    train, val = digits
    torch.manual_seed(0)
    fp = build_model("resnet20", 10)
    t = engine.make_trainee("fp", fp, engine.OptimSpec(lr=0.1), CPU)
    spec = engine.FitSpec(2, 0, CPU, tmp_path_factory.mktemp("fp") / "fp.pt", progress=False)
    engine.fit([t], train, val, spec)
    return fp.state_dict()


def _train(rounds, digits, tmp_path, fp_state, sp=False, kd=False):
    train, val = digits
    torch.manual_seed(0)
    fp = build_model("resnet20", 10)
    fp.load_state_dict(fp_state)
    model = quantize(fp, 2, 2)
    nets = {"student": model}
    if kd:
        nets["teacher"] = fp
    top1 = 0.0
    for i, rnd in enumerate(rounds):
        rnd.apply(model)
        trainees = [
            engine.make_trainee(n, m, engine.OptimSpec(lr=0.02), CPU) for n, m in nets.items()
        ]
        hooks = [StochasticPrecision(model, seed=0)] if sp else []
        spec = engine.FitSpec(rnd.epochs, 0, CPU, tmp_path / f"r{i}.pt", progress=False)
        hist = engine.fit(trainees, train, val, spec, JointDistillation() if kd else None, hooks)
        top1 = engine.summarize(hist, "student")["top1"]
    return top1


@pytest.mark.parametrize(
    "name,rounds,sp,kd",
    [
        ("direct", direct_rounds(2, 2, 2), False, False),
        ("ts", two_stage_rounds(2, 2, 1, 1), False, False),
        ("pq", decay_rounds([(8, 8), (2, 2)], 1), False, False),
        ("sp", direct_rounds(2, 2, 2), True, False),
        ("kd", direct_rounds(2, 2, 2), False, True),
        ("sp+kd", direct_rounds(2, 2, 2), True, True),
    ],
)
def test_method_learns_digits(name, rounds, sp, kd, digits, tmp_path, fp_state):
    top1 = _train(rounds, digits, tmp_path, fp_state, sp=sp, kd=kd)
    assert top1 > 40.0, f"{name}: {top1:.1f} %"


def test_two_students_with_hint_learn_digits(digits, tmp_path, fp_state):
    """Joint KD with two students (W2A2 and W4A4) beside one FP teacher and the L2 hint on
    the residual-stage outputs: all three networks learn."""
    train, val = digits
    torch.manual_seed(0)
    teacher = build_model("resnet20", 10)
    teacher.load_state_dict(fp_state)
    s2, s4 = (quantize(build_model("resnet20", 10), b, b) for b in (2, 4))
    s2.load_state_dict(fp_state, strict=False)
    s4.load_state_dict(fp_state, strict=False)
    nets = {"student": s2, "student_w4a4": s4, "teacher": teacher}
    trainees = [engine.make_trainee(n, m, engine.OptimSpec(lr=0.02), CPU) for n, m in nets.items()]
    objective = JointDistillation(KDWeights(hint_beta=0.1), hint_models=list(nets.values()))
    spec = engine.FitSpec(2, 0, CPU, tmp_path / "kd.pt", progress=False)
    hist = engine.fit(trainees, train, val, spec, objective)
    for name in nets:
        assert engine.summarize(hist, name)["top1"] > 40.0, name
