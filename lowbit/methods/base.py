"""The one interface every method implements: given a stage's context, return a Recipe.

A training stage runs one *stage method* (it sets the rounds: direct, two-stage, bit
decay, FP pretraining) and every *add-on* whose config block the stage's section sets
(`kd:` joint distillation, `sp:` stochastic precision). Each contributes a Recipe; the
recipes are combined and handed to the engine, so the training code has no branch per
method, and a new method is a new file (or, for a test or an experiment, an object
passed to `lowbit.training.run_stage`).

    class FreezeBN:                         # a method of your own
        name = "freeze-bn"
        def recipe(self, ctx: Context) -> Recipe:
            return Recipe(self.name, rounds=direct_rounds(2, 2, ctx.cfg.params.epochs))

The training code knows no method: what a method needs of it (which networks its hooks
act on, whether a step may leave parameters unused, where the student starts) is a
field of its Recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from lowbit.engine import Hook, Objective
from lowbit.methods.rounds import Round

# Builds the objective from every network of the run ({"student": …, "teacher": …}).
ObjectiveFactory = Callable[[dict[str, nn.Module]], Objective]
# Builds a round's hooks from the networks they act on (the student and Recipe.hooked),
# once their trainees exist (compiled, when common.compile is set).
HookFactory = Callable[[list[nn.Module]], list[Hook]]


@dataclass
class Context:
    """What a method may read: the stage config, the architecture, where the student
    starts and the student itself, and a way to load or build other networks."""

    cfg: Any  # lowbit.config.StageConfig
    arch: dict[str, Any]
    init: Any  # lowbit.training.chain.Init: the student's starting point
    student: nn.Module | None = None  # set once the stage method's rounds are known
    load: Callable[[Any], Any] | None = None  # (lowbit.identity.RunId) -> Init
    # (init or None for scratch, w_bits, a_bits) -> a quantized network holding init
    build: Callable[[Any, int, int], nn.Module] | None = None
    float_net: Callable[[Any], nn.Module] | None = None  # (init or None) -> the float net


@dataclass
class Recipe:
    """One method's contribution to a stage.

    label: its name in results ("pq", "kd"; "" adds none); rounds: set by the stage
    method only; fp: the student is the float network (pretraining); start: the stage
    method only, (state dict, its source): the student starts from these weights, not
    from its init stage (published weights); nets: networks trained beside the student
    (the KD teacher, extra students); hooked: those of `nets` the hooks act on besides
    the student (extra students, not the teacher); lr: a per-network lr overriding the
    stage's (the teacher's own lr); objective / hooks: factories, called once per round;
    leaves_unused: a step may leave parameters out of the forward (SP switches
    quantizers off), so DDP must look for unused ones every step."""

    label: str
    rounds: list[Round] = field(default_factory=list)
    fp: bool = False
    start: tuple[dict[str, Any], str] | None = None
    nets: dict[str, nn.Module] = field(default_factory=dict)
    hooked: tuple[str, ...] = ()
    lr: dict[str, float] = field(default_factory=dict)
    objective: ObjectiveFactory | None = None
    hooks: HookFactory | None = None
    leaves_unused: bool = False


class Method(Protocol):
    """A method: its name (also its config block, for add-ons) and its recipe."""

    name: str

    def recipe(self, ctx: Context) -> Recipe: ...


def label(chain: str, recipes: list[Recipe]) -> str:
    """The method chain of a result: the init chain's label, then each recipe's, without
    repeats; "direct" only when alone (direct + kd is "kd", pq then direct is "pq")."""
    tokens = [t for part in (chain, *(r.label for r in recipes)) for t in part.split("+") if t]
    tokens = list(dict.fromkeys(tokens))
    if len(tokens) > 1:
        tokens = [t for t in tokens if t != "direct"]
    return "+".join(tokens)


def combine(recipes: list[Recipe]) -> Recipe:
    """One recipe from the stage method's and the add-ons': rounds, fp and start from the
    first, networks (and those hooked) and learning rates merged, hooks chained, one
    objective at most; a step leaves parameters unused if any recipe's may."""
    first = recipes[0]
    objectives = [r.objective for r in recipes if r.objective is not None]
    if len(objectives) > 1:
        raise ValueError("two methods of one stage both define the training objective")
    factories = [r.hooks for r in recipes if r.hooks is not None]

    def hooks(nets: list[nn.Module]) -> list[Hook]:
        return [h for f in factories for h in f(nets)]

    merged = Recipe(first.label, first.rounds, first.fp, first.start)
    for r in recipes:
        merged.nets.update(r.nets)
        merged.lr.update(r.lr)
        merged.hooked += tuple(n for n in r.hooked if n not in merged.hooked)
    merged.objective = objectives[0] if objectives else None
    merged.hooks = hooks if factories else None
    merged.leaves_unused = any(r.leaves_unused for r in recipes)
    return merged
