"""collect.py: metrics.json → tidy frames; every malformed file is an error naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.errors import LowbitError
from lowbit.report.collect import collect, read_history
from tests.report.synth import add_teacher_history, write_run

REQUIRED_COLUMNS = {
    "run",
    "stage",
    "method",
    "model",
    "dataset",
    "w_bits",
    "a_bits",
    "seed",
    "metric",
    "value",
    "wall_s",
    "images_per_s",
    "device",
    "commit",
}


def test_long_format_one_row_per_run_and_metric(tmp_path: Path) -> None:
    teacher = {"top1": 95.0, "top5": 99.9, "best_top1": 95.5, "best_top5": 99.9}
    write_run(tmp_path, "kd", stage="distill", method="kd", extra={"teacher": teacher})
    write_run(tmp_path, "ts", top5=None, best_top5=None)  # top-5 is optional
    long = collect(tmp_path).long()
    assert set(long.columns) >= REQUIRED_COLUMNS
    assert not long.duplicated(["run", "metric"]).any()
    teacher_rows = long[long["run"] == "kd#teacher"].set_index("metric")
    assert teacher_rows.loc["best_top1", "value"] == 95.5
    assert teacher_rows.loc["best_top1", "method"] == "kd-teacher@w2a2"
    assert (teacher_rows["w_bits"] == 32).all() and (teacher_rows["a_bits"] == 32).all()
    assert "budget_epochs" not in teacher_rows.index  # not inherited from the student
    assert set(long[long["run"] == "ts"]["metric"]) == {
        "top1",
        "best_top1",
        "loss",
        "best_epoch",
        "epochs",
        "budget_epochs",
    }
    assert (long["commit"] == "abc1234").all() and (long["device"] == "cpu").all()


def test_runs_are_found_recursively_sorted_and_the_summary_skipped(tmp_path: Path) -> None:
    write_run(tmp_path, "b/deep/run")
    write_run(tmp_path, "a")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "metrics.json").write_text('{"w2a2/ts/top1": 91.0}')
    col = collect(tmp_path, skip=tmp_path / "report" / "metrics.json")
    assert list(col.runs["run"]) == ["a", "b/deep/run"]


def test_missing_run_json_is_unknown_provenance(tmp_path: Path) -> None:
    write_run(tmp_path, "r", run_json=False)
    col = collect(tmp_path)
    assert col.runs.loc[0, "commit"] == "unknown"
    assert not col.runs.loc[0, "has_run_json"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"drop": "top1"}, "missing required key 'top1'"),
        ({"drop": "method"}, "missing required key 'method'"),
        ({"w_bits": "2"}, "key 'w_bits' must be an integer bit-width"),
        ({"w_bits": 64}, "key 'w_bits' must be an integer bit-width"),
        ({"seed": True}, "key 'seed' must be an integer"),
        ({"best_top1": 0.91e3}, "key 'best_top1' must be a percentage"),
        ({"wall_s": "40 s"}, "key 'wall_s' must be a number"),
        ({"extra": [1]}, "key 'extra' must be an object"),
        ({"extra": {"teacher": {"top1": "high"}}}, "key 'extra.teacher.top1' must be"),
    ],
)
def test_malformed_metrics_names_the_file(tmp_path: Path, content: object, problem: str) -> None:
    write_run(tmp_path, "good")
    bad = write_run(tmp_path, "bad") / "metrics.json"
    if isinstance(content, str):
        bad.write_text(content)
    else:
        m = json.loads(bad.read_text())
        m.pop(content.pop("drop", ""), None)
        bad.write_text(json.dumps({**m, **content}))
    with pytest.raises(LowbitError) as err:
        collect(tmp_path)
    assert str(bad) in str(err.value)
    assert problem in str(err.value)


def test_no_runs_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(LowbitError, match=f"no runs found under {tmp_path / 'empty'}"):
        collect(tmp_path / "empty")
    with pytest.raises(LowbitError, match="runs folder not found"):
        collect(tmp_path / "nope")


def test_history_nets_and_restarting_epochs(tmp_path: Path) -> None:
    run = write_run(tmp_path, "kd", stage="distill", method="kd")
    add_teacher_history(run)
    hist = read_history(run)
    assert set(hist["net"]) == {"main", "teacher"}
    assert list(hist[hist["net"] == "main"]["step"]) == [1, 2, 3, 4, 5, 6]
    # Two rounds that each count epochs from 1 (TS/PQ): steps run on over both rounds.
    (run / "history.csv").write_text(
        "epoch,train_loss,val_top1\n1,2,50\n2,1,60\n1,1.5,55\n2,1,70\n"
    )
    assert list(read_history(run)["step"]) == [1, 2, 3, 4]
    (run / "history.csv").write_text("loss\n1\n")
    with pytest.raises(LowbitError, match="history.csv: history has no 'epoch' column"):
        read_history(run)
    assert read_history(tmp_path) is None


def test_import_is_light() -> None:
    code = (
        "import sys, lowbit.report\n"
        "heavy = {'pandas', 'seaborn', 'matplotlib', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
