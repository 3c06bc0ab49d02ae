"""A stage's best-epoch result comes from its final round: earlier TS / PQ rounds train
the network at other bit-widths and must not lend it their accuracy."""

from __future__ import annotations

import math

from lowbit.training.results import summary as _summary

NAN = math.nan


def _row(epoch: int, rnd: int, top1: float, top5: float = 99.0) -> dict[str, float]:
    return {"epoch": epoch, "round": rnd, "student/val_top1": top1, "student/train_top1": 2 * epoch,
            "student/val_top5": top5, "student/val_loss": 1.0}  # fmt: skip


def test_best_is_taken_from_the_final_round_only():
    rows = [  # a PQ run 8 -> 4 -> 2: the W4A4 round scores higher than the W2A2 one
        _row(1, 1, 60.0), _row(2, 1, 70.0),
        _row(3, 2, 80.0, 99.5), _row(4, 2, NAN),
        _row(5, 3, 65.0), _row(6, 3, 71.0, 98.0),
    ]  # fmt: skip
    s = _summary(rows, "student")
    assert (s["best_top1"], s["best_top5"], s["best_epoch"]) == (71.0, 98.0, 6)
    assert s["top1"] == 71.0 and s["epochs"] == 6 and s["train_top1"] == 12


def test_single_round_best_is_over_all_epochs():
    rows = [_row(1, 1, 50.0), _row(2, 1, 58.0, 97.0), _row(3, 1, 55.0)]
    s = _summary(rows, "student")
    assert (s["best_top1"], s["best_top5"], s["best_epoch"]) == (58.0, 97.0, 2)
    assert s["top1"] == 55.0
