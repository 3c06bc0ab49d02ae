"""Training-curve figures: round boundaries labelled with the bit-width of the new round."""

from __future__ import annotations

from pathlib import Path

from lowbit.report.collect import read_history
from lowbit.report.plots import _round_starts
from tests.report.synth import write_run


def test_round_starts_are_labelled_with_the_new_rounds_bits(tmp_path: Path) -> None:
    run = write_run(tmp_path, "pq", stage="bit-decay", method="pq", history=False)
    rows = [(1, 1, 8, 8), (2, 1, 8, 8), (1, 2, 4, 4), (2, 2, 4, 4), (1, 3, 2, 2), (2, 3, 2, 2)]
    (run / "history.csv").write_text(
        "epoch,round,w_bits,a_bits,val_top1,train_loss\n"
        + "".join(f"{e},{r},{w},{a},50,1\n" for e, r, w, a in rows)
    )
    hist = read_history(run)
    assert list(hist["w_bits"]) == [8, 8, 4, 4, 2, 2]
    assert _round_starts(hist) == [(2.5, "W4A4"), (4.5, "W2A2")]
    (run / "history.csv").write_text("epoch,round,val_top1\n1,1,50\n1,2,60\n")
    assert _round_starts(read_history(run)) == [(1.5, "")]  # bits not recorded: no label
