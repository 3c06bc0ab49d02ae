"""A method of one's own plugs in through the one interface (lowbit.methods.base), with
no change to lowbit: this test defines it, and the training code runs it like any other."""

from __future__ import annotations

import json

import yaml

from lowbit.config import load_config
from lowbit.methods.base import Context, Recipe
from lowbit.methods.rounds import Round
from lowbit.stages import stage_function
from lowbit.training.run import run_stage

PARAMS = {
    "common": {"dataset": "digits", "batch_size": 64, "workers": 0, "loader": "torch",
               "runs_dir": "runs", "data_dir": "data"},
    "prepare": {"image_size": 8},
    "pretrain": {"epochs": 1, "optim": {"lr": 0.1}},
    "direct": {"epochs": 2, "optim": {"lr": 0.02, "milestones": [0.5]}},
}  # fmt: skip


class StepCounter:
    """A hook: counts the steps it is called for, and the epochs it sees end."""

    def __init__(self) -> None:
        self.steps, self.epochs = 0, 0

    def on_step(self, step: int, total: int) -> None:
        self.steps += 1

    def on_epoch_end(self) -> None:
        self.epochs += 1


class FourThenTwo:
    """A test-only method: one epoch at W4A4, then the stage's epochs at W2A2, with a
    hook of its own on every student."""

    name = "four-then-two"

    def __init__(self) -> None:
        self.counters: list[StepCounter] = []

    def recipe(self, ctx: Context) -> Recipe:
        epochs = ctx.cfg.params.epochs

        def hooks(students):
            self.counters.append(StepCounter())
            return [self.counters[-1]]

        rounds = [Round(4, 4, 1, name="w4a4"), Round(2, 2, epochs, name="w2a2")]
        return Recipe(self.name, rounds, hooks=hooks)


def test_a_method_defined_outside_lowbit_trains_through_the_same_code(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in ("prepare", "pretrain"):
        stage_function(stage)(load_config(stage, tmp_path / "params.yaml"))
    method = FourThenTwo()
    cfg = load_config("direct", tmp_path / "params.yaml", ["tag=mine"], w_bits=2, a_bits=2)
    m = run_stage(cfg, method)
    assert m["method"] == "four-then-two" and (m["w_bits"], m["a_bits"]) == (2, 2)
    assert m["final_epochs"] == 2 and m["budget_epochs"] == 3 and m["extra_epochs"] == 1
    assert [c.epochs for c in method.counters] == [1, 2]  # one hook per round
    assert method.counters[1].steps == 2 * method.counters[0].steps > 0
    run = tmp_path / "runs" / "direct" / "w2a2-mine"
    lines = (run / "history.csv").read_text().splitlines()
    rows = [dict(zip(lines[0].split(","), x.split(","), strict=True)) for x in lines[1:]]
    assert [(r["round"], r["w_bits"], r["a_bits"]) for r in rows] == [
        ("1", "4", "4"), ("2", "2", "2"), ("2", "2", "2"),
    ]  # fmt: skip
    assert json.loads((run / "metrics.json").read_text())["method"] == "four-then-two"
