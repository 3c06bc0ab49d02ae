"""The convergence check: the late gain, McNemar's test on the images an evaluation
gained and lost, and the engine counting them across a resume."""

from __future__ import annotations

import math

import pytest
import torch

from lowbit import engine
from lowbit.models import build_model
from lowbit.quant import quantize
from lowbit.training.convergence import converged, late_gain, late_p

CPU = torch.device("cpu")


def _rows(top1: list[float], gained: float = math.nan, lost: float = math.nan) -> list[dict]:
    rows = [{"round": 1, "net/val_top1": v} for v in top1]
    rows[-1].update({"net/val_gained": gained, "net/val_lost": lost})
    return rows


def test_late_p_is_mcnemars_exact_one_sided_p() -> None:
    # 9 of 12 changed images were gains: P(X >= 9 | Bin(12, 1/2)) = (220+66+12+1) / 4096
    assert late_p(_rows([50, 60, 70, 72], 9, 3), "net") == pytest.approx(299 / 4096)
    assert late_p(_rows([50, 60, 70, 73], 10, 0), "net") == pytest.approx(1 / 1024)
    assert late_p(_rows([50, 60, 70, 70], 0, 0), "net") == 1.0  # nothing changed
    assert late_p(_rows([50, 60, 70, 72]), "net") is None  # not counted (an older run)
    assert late_p(_rows([50, 60, 70, 72], "", ""), "net") is None  # an empty csv cell


@pytest.mark.parametrize(
    ("gain", "p", "expected"),
    [
        (0.5, None, True),  # within the limit
        (1.0, 0.001, True),  # at the limit: flat, however significant
        (2.0, None, False),  # above it, no counts: the limit decides
        (2.0, 0.073, True),  # above it, but evaluation noise
        (2.0, 0.01, False),  # above it and significant: still rising
        (None, 0.01, None),  # not measurable
    ],
)
def test_converged_needs_a_gain_above_the_limit_and_beyond_noise(gain, p, expected) -> None:
    assert converged(gain, p) is expected


def _trainee(seed: int = 0) -> engine.Trainee:
    torch.manual_seed(seed)
    model = quantize(build_model("resnet20", 10), 2, 2)
    return engine.make_trainee("net", model, engine.OptimSpec(lr=0.05, milestones=(3,)), CPU)


def _spec(tmp_path, epochs: int, name: str) -> engine.FitSpec:
    return engine.FitSpec(epochs, 0, CPU, tmp_path / name, progress=False, compare_after=2)


def test_engine_counts_images_gained_and_lost_since_the_reference_across_a_resume(
    digits, tmp_path
) -> None:
    train, val = digits
    full = engine.fit([_trainee()], train, val, _spec(tmp_path, 3, "full.pt"))

    first = _trainee()
    engine.fit([first], train, val, _spec(tmp_path, 2, "part.pt"))  # "killed" after epoch 2
    ref = engine.evaluate(first.model, val, CPU, keep_hits=True)["hits"]  # (N_val,) bool
    resumed = _trainee(seed=123)  # a fresh process: the reference comes from the checkpoint
    hist = engine.fit([resumed], train, val, _spec(tmp_path, 3, "part.pt"))
    now = engine.evaluate(resumed.model, val, CPU, keep_hits=True)["hits"]

    last = hist.epochs[-1]
    assert last["net/val_gained"] == (now & ~ref).sum().item()
    assert last["net/val_lost"] == (ref & ~now).sum().item()
    assert (last["net/val_gained"], last["net/val_lost"]) == (
        full.epochs[-1]["net/val_gained"],
        full.epochs[-1]["net/val_lost"],
    )
    # the counts are the top-1 difference, image by image
    rows = [{"round": 1, **r} for r in hist.epochs]
    n = now.numel()
    assert late_gain(rows, "net") == pytest.approx(
        round(100.0 * (last["net/val_gained"] - last["net/val_lost"]) / n, 4)
    )
    assert "net/val_gained" not in hist.epochs[1]  # the reference epoch itself
