"""Each method trains a W2A2 ResNet-20 on digits, from a briefly pretrained FP network
(the paper's setting), to well above chance (10 %).

The recipe follows the project's protocol at a tiny size, so that it learns on any host:
an annealed FP start (2 epochs, lr 0.1 then 0.01: 91-98 % top-1, where a constant lr left
20-87 %), every round annealed (cosine from lr 0.05), and the same 2-epoch final round
for every method (TS's and PQ's earlier round is extra). With constant-lr rounds of 1-2
epochs, TS ended at 44-71 % and direct as low as 52 % (seeds 0-4, AVX2): near the floor.
"""

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
FINAL = 3  # epochs of every method's final-precision round


@pytest.fixture(scope="module")
def fp_state(digits, tmp_path_factory):
    train, val = digits
    torch.manual_seed(0)
    fp = build_model("resnet20", 10)
    t = engine.make_trainee("fp", fp, engine.OptimSpec(lr=0.1, milestones=(1,)), CPU)
    spec = engine.FitSpec(2, 0, CPU, tmp_path_factory.mktemp("fp") / "fp.pt", progress=False)
    engine.fit([t], train, val, spec)
    return fp.state_dict()


def _optim(epochs: int) -> engine.OptimSpec:
    """Every round, of any length, anneals: cosine from lr 0.05 to 0 over its steps."""
    return engine.OptimSpec(lr=0.05, schedule="cosine", epochs=epochs)


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
        trainees = [engine.make_trainee(n, m, _optim(rnd.epochs), CPU) for n, m in nets.items()]
        hooks = [StochasticPrecision(model, seed=0)] if sp else []
        spec = engine.FitSpec(rnd.epochs, 0, CPU, tmp_path / f"r{i}.pt", progress=False)
        hist = engine.fit(trainees, train, val, spec, JointDistillation() if kd else None, hooks)
        top1 = engine.summarize(hist, "student")["top1"]
    return top1


@pytest.mark.parametrize(
    "name,rounds,sp,kd",
    [
        ("direct", direct_rounds(2, 2, FINAL), False, False),
        ("ts", two_stage_rounds(2, 2, 1, FINAL), False, False),
        ("pq", decay_rounds([(8, 8), (2, 2)], FINAL, step_epochs=1), False, False),
        ("sp", direct_rounds(2, 2, FINAL), True, False),
        ("kd", direct_rounds(2, 2, FINAL), False, True),
        ("sp+kd", direct_rounds(2, 2, FINAL), True, True),
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
    trainees = [engine.make_trainee(n, m, _optim(FINAL), CPU) for n, m in nets.items()]
    objective = JointDistillation(KDWeights(hint_beta=0.1), hint_models=list(nets.values()))
    spec = engine.FitSpec(FINAL, 0, CPU, tmp_path / "kd.pt", progress=False)
    hist = engine.fit(trainees, train, val, spec, objective)
    for name in nets:
        assert engine.summarize(hist, name)["top1"] > 40.0, name
