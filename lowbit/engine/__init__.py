"""Training and evaluation loop shared by every stage and method.

The engine trains one or more networks ("trainees", each with its own optimiser and
learning rate) with an *objective* that performs one optimisation step on a batch, and
*hooks* called with an explicit (step, total) before every step. The plain objective is
cross-entropy on one network; the paper's methods supply others (joint distillation) or
hooks (stochastic precision).

Determinism: every epoch reseeds all RNGs from (seed, epoch), so a run resumed from the
checkpoint of epoch k repeats epochs k+1.. exactly as an uninterrupted run does.

    steps.py       Trainee, Execution (layout, precision, compile), CrossEntropy
    optim.py       OptimSpec: SGD and the per-round schedule
    loop.py        fit(): epochs, steps, history rows
    evaluation.py  evaluate() over every rank
    state.py       the resumable checkpoint of a round
"""

from lowbit.engine.evaluation import evaluate
from lowbit.engine.loop import fit, summarize
from lowbit.engine.loop_types import SEED_STRIDE, FitSpec, History, derived_seed, seed_everything
from lowbit.engine.optim import OptimSpec, resolve_milestones
from lowbit.engine.reduce import all_sum, rank_world, topk_hits
from lowbit.engine.state import load_state, save_state
from lowbit.engine.steps import (
    AUTOCAST,
    CrossEntropy,
    Execution,
    Hook,
    Objective,
    StepOut,
    Trainee,
    autocast,
    compiled,
    make_trainee,
    optimizer_step,
    unwrap,
)

__all__ = [
    "AUTOCAST", "SEED_STRIDE", "CrossEntropy", "Execution", "FitSpec", "History", "Hook",
    "Objective", "OptimSpec", "StepOut", "Trainee", "all_sum", "autocast", "compiled",
    "derived_seed", "evaluate", "fit", "load_state", "make_trainee", "optimizer_step",
    "rank_world", "resolve_milestones", "save_state", "seed_everything", "summarize",
    "topk_hits", "unwrap",
]  # fmt: skip
