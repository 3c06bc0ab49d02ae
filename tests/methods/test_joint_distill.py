"""Joint knowledge distillation: losses against hand computation, gradient routing."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lowbit import engine
from lowbit.methods.joint_distill import JointDistillation, KDWeights, distill_term, kd_losses


def _kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def _softmax(z, t):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_losses_match_hand_computation(t):
    zt = [[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]]
    zs = [[0.2, 0.1, 0.4], [1.0, -1.0, 0.0]]
    y = [2, 1]
    w = KDWeights(temperature=t)
    ls, lt = kd_losses(torch.tensor(zt), [torch.tensor(zs)], torch.tensor(y), w)
    ce = lambda z, c: -math.log(_softmax(z, 1.0)[c])  # noqa: E731
    kl_s = sum(_kl(_softmax(a, t), _softmax(b, t)) for a, b in zip(zt, zs, strict=True)) / 2
    kl_t = sum(_kl(_softmax(b, t), _softmax(a, t)) for a, b in zip(zt, zs, strict=True)) / 2
    exp_s = 0.7 * (ce(zs[0], 2) + ce(zs[1], 1)) / 2 + 0.7 * t * t * kl_s
    exp_t = 1.0 * (ce(zt[0], 2) + ce(zt[1], 1)) / 2 + 0.5 * t * t * kl_t
    assert float(ls[0]) == pytest.approx(exp_s, rel=1e-5)
    assert float(lt) == pytest.approx(exp_t, rel=1e-5)


def test_teacher_term_averages_over_students_and_mse_variant():
    zt = torch.tensor([[1.0, 0.0]])
    s1, s2 = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])
    y = torch.tensor([0])
    w = KDWeights()
    _, lt = kd_losses(zt, [s1, s2], y, w)
    ce_t = torch.nn.functional.cross_entropy(zt, y)
    mean_kl = (distill_term(s1, zt, w) + distill_term(s2, zt, w)) / 2
    assert float(lt) == pytest.approx(float(ce_t + 0.5 * mean_kl))
    mse = KDWeights(loss="mse")
    assert float(distill_term(zt, s1, mse)) == pytest.approx(1.0)  # ((1-0)^2 + (0-1)^2) / 2


def test_invalid_kd_weights():
    for kw in ({"temperature": 0}, {"lambda_s": -1}, {"loss": "js"}):
        with pytest.raises(ValueError):
            KDWeights(**kw)


def test_gradients_reach_teacher_only_through_its_own_terms():
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    ls, lt = kd_losses(teacher(x), [student(x)], y)
    ls[0].backward(retain_graph=True)
    assert teacher.weight.grad is None  # the student's loss never reaches the teacher
    assert student.weight.grad is not None
    student.zero_grad()
    lt.backward()
    assert student.weight.grad is None or float(student.weight.grad.abs().sum()) == 0.0
    assert teacher.weight.grad is not None


def test_joint_step_updates_both_and_teacher_sees_pre_update_student_logits():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    t = engine.make_trainee("teacher", nn.Linear(4, 3), engine.OptimSpec(lr=0.1), cpu)
    s = engine.make_trainee("student", nn.Linear(4, 3), engine.OptimSpec(lr=0.1), cpu)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with torch.no_grad():
        zs_before, zt_before = s.model(x), t.model(x)
    _, lt = kd_losses(zt_before, [zs_before], y)
    wt, ws = t.model.weight.clone(), s.model.weight.clone()
    out = JointDistillation()([s, t], x, y)
    assert float(out["teacher"].loss) == pytest.approx(float(lt))
    assert not torch.equal(wt, t.model.weight) and not torch.equal(ws, s.model.weight)
    with pytest.raises(ValueError, match="student"):
        JointDistillation()([t], x, y)


class _Staged(nn.Module):
    """Two named residual-style stages (layer1, layer2) and a head, like the ResNets."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1, self.layer2, self.fc = nn.Linear(4, 5), nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.layer2(torch.relu(self.layer1(x)))))


def test_hint_term_is_the_summed_stage_mse_and_reaches_only_the_student():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    w = KDWeights(hint_beta=0.3)
    s = engine.make_trainee("student", _Staged(), engine.OptimSpec(lr=0.1), cpu)
    t = engine.make_trainee("teacher", _Staged(), engine.OptimSpec(lr=0.1), cpu)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with torch.no_grad():
        hs1, ht1 = s.model.layer1(x), t.model.layer1(x)
        hs2, ht2 = s.model.layer2(torch.relu(hs1)), t.model.layer2(torch.relu(ht1))
        zs, zt = s.model(x), t.model(x)
    (ls,), lt = kd_losses(zt, [zs], y, w)
    hint = ((hs1 - ht1) ** 2).mean() + ((hs2 - ht2) ** 2).mean()
    teacher_before = {k: v.clone() for k, v in t.model.state_dict().items()}
    out = JointDistillation(w, hint_models=[s.model, t.model])([s, t], x, y)
    assert float(out["student"].loss) == pytest.approx(float(ls + 0.3 * hint), rel=1e-6)
    assert float(out["teacher"].loss) == pytest.approx(float(lt), rel=1e-6)  # no hint term
    # the teacher's update is the one its own loss gives: replay it without any hint
    ref = engine.make_trainee("teacher", _Staged(), engine.OptimSpec(lr=0.1), cpu)
    ref.model.load_state_dict(teacher_before)
    (_,), lt_ref = kd_losses(ref.model(x), [zs], y, w)
    engine.optimizer_step(ref, lt_ref)
    for k, v in ref.model.state_dict().items():
        assert torch.allclose(v, t.model.state_dict()[k], atol=1e-7), k


def test_two_students_each_learn_from_the_teacher_and_it_from_their_mean():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    nets = [nn.Linear(4, 3) for _ in range(3)]
    names = ["student", "student_w4a4", "teacher"]
    s2, s4, t = (
        engine.make_trainee(n, m, engine.OptimSpec(lr=0.1), cpu)
        for n, m in zip(names, nets, strict=True)
    )
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with torch.no_grad():
        z2, z4, zt = (m(x) for m in nets)
    (l2, l4), lt = kd_losses(zt, [z2, z4], y)
    w = KDWeights()
    by_hand = (
        w.lambda_t * F.cross_entropy(zt, y)
        + w.lambda_tkl * (distill_term(z2, zt, w) + distill_term(z4, zt, w)) / 2
    )
    assert float(lt) == pytest.approx(float(by_hand), rel=1e-6)
    out = JointDistillation()([s2, s4, t], x, y)
    assert float(out["student"].loss) == pytest.approx(float(l2), rel=1e-6)
    assert float(out["student_w4a4"].loss) == pytest.approx(float(l4), rel=1e-6)
    assert float(out["teacher"].loss) == pytest.approx(float(lt), rel=1e-6)
