"""The stage live log (dvclive) where users start: a git repository with no commit yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lowbit.training.live import RunLog

ROW = {"epoch": 1, "net/train_loss": 0.5, "net/train_top1": 80.0, "net/val_top1": 75.0}


def test_the_live_log_works_in_a_git_repo_without_commits(tmp_path, monkeypatch):
    """`git init && dvc init && dvc repro` before any commit: dvclive 3.49 alone raises
    "Empty git repo" there; the log is still written, per epoch and as a summary."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVCLIVE_TEST", raising=False)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q"], check=True)
    live = tmp_path / "dvclive" / "direct" / "w2a2"
    summary = tmp_path / "dvclive" / "metrics" / "direct" / "w2a2.json"
    log = RunLog((live, summary), "direct w2a2", ["net"])
    log.epoch(ROW, 0, "1/1")
    log.close({"top1": 75.0, "best_top1": 75.0, "budget_epochs": 1.0})
    tsv = (live / "plots" / "metrics" / "val" / "top1.tsv").read_text().splitlines()
    assert tsv == ["step\ttop1", "0\t75.0"]
    # the plots folder holds plots only: DVC reads a stage's folder of each kind whole
    assert not (live / "metrics.json").exists()
    # what the run measured; its cost follows from params.yaml (one column less per run)
    assert json.loads(summary.read_text()) == {"top1": 75.0, "best_top1": 75.0, "step": 1}
