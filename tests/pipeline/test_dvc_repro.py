"""A real `dvc repro` of the default pipeline, shrunken, in a temporary git repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRAINING = (
    "pretrain", "quantize_weights", "quantize_activations", "bit_decay", "direct",
    "stochastic_precision", "distill",
)  # fmt: skip


def _run(args: list[str], cwd: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def shrunken_pipeline(dest: Path, bits: list[int], overrides: dict | None = None) -> Path:
    """The root dvc.yaml + params.yaml in a fresh git+DVC repo, 1 epoch per stage."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "lowbit", dest / "lowbit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "reports" / "reference", dest / "reports" / "reference")
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["vars"] = [{"bits": bits}]
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in TRAINING:
        params[stage]["epochs"] = 1
        params[stage]["optim"]["milestones"] = []
    params["bit_decay"]["schedule"] = [4, 2]
    params["prepare"]["image_size"] = 8
    params["common"]["workers"] = 1
    for section, values in (overrides or {}).items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert _run(cmd, dest).returncode == 0
    _run(["git", "add", "-A"], dest)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], dest)
    return dest


@pytest.mark.slow
def test_dvc_repro_default_pipeline_end_to_end(tmp_path):
    repo = shrunken_pipeline(tmp_path / "repo", bits=[2])
    first = _run(["dvc", "repro"], repo)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    stages = ["quantize-weights", "quantize-activations", "bit-decay", "direct",
              "stochastic-precision", "distill"]  # fmt: skip
    for d in [repo / "runs" / "pretrain", *(repo / "runs" / s / "w2a2" for s in stages)]:
        for f in ("model.pt", "metrics.json", "history.csv", "run.json"):
            assert (d / f).is_file(), d / f
        m = json.loads((d / "metrics.json").read_text())
        assert 0 <= m["top1"] <= 100 and m["epochs"] >= 1
    assert json.loads((repo / "runs/distill/w2a2/metrics.json").read_text())["method"] == "pq+kd"
    run = json.loads((repo / "runs/direct/w2a2/run.json").read_text())
    assert len(run["provenance"]["git_commit"]) == 40 and run["config"]["direct"]["w_bits"] == 2
    report = repo / "reports" / "digits-resnet20"
    assert "W2A2" in (report / "README.md").read_text()
    assert list((report / "plots").glob("*.png"))
    assert not list((repo / "runs").glob(".resume/*/*/*.pt"))  # resume state cleaned up

    second = _run(["dvc", "repro"], repo)
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout

    # One parameter changes: only what reads it is out of date.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["direct"]["optim"]["lr"] = 0.05
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run(["dvc", "status", "--json"], repo)
    changed = set(json.loads(status.stdout))
    assert changed == {"direct@2"}, changed  # report reruns once direct@2 has new outputs

    metrics = _run(["dvc", "metrics", "show", "--json"], repo)
    assert metrics.returncode == 0 and "top1" in metrics.stdout

    # `dvc plots show` renders the training curves and the report's bits-vs-top-1 data.
    plots = _run(["dvc", "plots", "show", "--json"], repo)
    assert plots.returncode == 0, plots.stderr[-2000:]
    for name in ("runs/pretrain/history.csv", "runs/distill/w2a2/history.csv", "plots.csv"):
        assert name in plots.stdout, name
    assert "val_top1" in plots.stdout and "teacher/val_top1" in plots.stdout

    # Another seed as a DVC experiment: everything reruns (the seed also draws the split)
    # and `dvc exp show` sets the two runs side by side with their own results.
    params["direct"]["optim"]["lr"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed 0"], repo)
    exp = _run(["dvc", "exp", "run", "-S", "common.seed=1", "-n", "seed1"], repo)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    shown = _run(["dvc", "exp", "show", "--json"], repo)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = _exp_rows(json.loads(shown.stdout))
    head = _run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert rows["seed1"]["seed"] == 1 and rows[head]["seed"] == 0, rows
    a, b = rows["seed1"]["metrics"], rows[head]["metrics"]
    assert a.keys() == b.keys() and any(k.endswith("/top1") for k in a)
    assert a != b  # another seed: another split, initialisation and order


def _exp_rows(shown: list) -> dict[str, dict]:
    """`dvc exp show --json` → {rev or name: {"seed": common.seed, "metrics": …}}."""
    rows = {}

    def add(rev: dict) -> None:
        data = rev.get("data") or {}
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get("reports/digits-resnet20/metrics.json", {})
        row = {"seed": params.get("common", {}).get("seed"), "metrics": metrics.get("data")}
        for key in (rev.get("rev"), rev.get("name")):
            if key:
                rows[key] = row
        for group in rev.get("experiments") or []:
            for r in group.get("revs", []):
                add(r)

    for rev in shown:
        add(rev)
    return rows
