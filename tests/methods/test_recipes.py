"""What the add-ons tell the training code through their Recipe, the only way they can:
which networks the hooks act on, whether a step may leave parameters unused, and (for
stochastic precision) how units switch on a compiled network."""

from __future__ import annotations

import torch

from lowbit.config import load_config
from lowbit.methods import JOINT_DISTILLATION, STOCHASTIC_PRECISION, Context, Recipe, combine
from lowbit.methods.rounds import Round
from lowbit.models import build_model
from lowbit.quant import quantize
from lowbit.training.plan import Plan


def _net(w_bits: int = 2) -> torch.nn.Module:
    return quantize(build_model("resnet20", 10, 8), w_bits, w_bits)


def _context(tmp_path, stage: str, sets: list[str]) -> Context:
    (tmp_path / "params.yaml").write_text("common: {seed: 5}\n")
    cfg = load_config(stage, tmp_path / "params.yaml", sets, 2, 2)
    return Context(cfg, {}, None, build=lambda i, w, a: _net(w), float_net=lambda i: _net(32))


def test_sp_hooks_switch_compiled_networks_by_gate_and_steps_leave_parameters_unused(tmp_path):
    recipe = STOCHASTIC_PRECISION.recipe(_context(tmp_path, "stochastic-precision", []))
    assert recipe.leaves_unused and recipe.hooks is not None and recipe.hooked == ()
    eager, compiled = _net(), _net()
    compiled.compile(dynamic=False)  # in place, as make_trainee does (compiles when called)
    a, b = recipe.hooks([eager, compiled])
    assert (a.model, b.model) == (eager, compiled)
    assert (a.gated, b.gated) == (False, True) and (a.seed, b.seed) == (5, 6)


def test_kd_hooks_act_on_the_students_not_the_teacher(tmp_path):
    sets = ["students=[4]", "kd.teacher_init=scratch", "init=scratch", "sp={}"]
    ctx = _context(tmp_path, "distill", sets)
    kd = JOINT_DISTILLATION.recipe(ctx)
    assert list(kd.nets) == ["w4a4", "teacher"] and kd.hooked == ("w4a4",)
    assert not kd.leaves_unused and kd.objective is not None
    main = Recipe("direct", [Round(2, 2, 1, name="w2a2")])
    recipe = combine([main, kd, STOCHASTIC_PRECISION.recipe(ctx)])
    assert recipe.hooked == ("w4a4",) and recipe.leaves_unused and recipe.rounds == main.rounds
    student = _net()
    plan = Plan({"student": student, **recipe.nets}, recipe.rounds, None, {}, recipe, "kd+sp")
    assert plan.hooked == [student, kd.nets["w4a4"]]  # in the order their seeds follow
    hooks = recipe.hooks(plan.hooked)
    assert [h.model for h in hooks] == plan.hooked and [h.seed for h in hooks] == [5, 6]
    # without an add-on that leaves parameters unused, DDP need not look for them
    assert not combine([main, kd]).leaves_unused
