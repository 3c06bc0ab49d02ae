"""The root pipeline in a fresh git+DVC repository, shrunk to test size (8x8 digits, a few
epochs per stage): shared by the `dvc repro` tests, in-process and on SLURM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRAINING = (
    "pretrain", "quantize_weights", "quantize_activations", "bit_decay", "direct",
    "stochastic_precision", "distill", "ts_pq_kd",
)  # fmt: skip


def run(args: list[str], cwd: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    """`args` in `cwd` with the venv first on PATH (DVC's stage commands call `lowbit`)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def shrunken_pipeline(
    dest: Path, bits: list[int], overrides: dict | None = None, epochs: int = 2
) -> Path:
    """The root dvc.yaml + params.yaml, `epochs` per final round, at `bits` only, committed
    once. `overrides` = {section: {key: value}} on top."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "lowbit", dest / "lowbit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "reports" / "reference", dest / "reports" / "reference")
    # the folder the report reads (a dep), without the committed seeds of the full-size runs
    (dest / "results").mkdir()
    shutil.copy(ROOT / "results" / "README.md", dest / "results" / "README.md")
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["pipeline"]["bits"] = bits
    for stage in TRAINING:
        params[stage]["epochs"] = epochs
        if params[stage]["optim"].get("schedule", "step") == "step":
            params[stage]["optim"]["milestones"] = [0.5]
    for stage in ("bit_decay", "ts_pq_kd"):
        params[stage].update(schedule=[4, 2], step_epochs=1)
        params[stage]["optim"]["schedule"] = "cosine"  # one-epoch rounds anneal too
    params["quantize_weights"]["epochs"] = 1
    params["quantize_weights"]["optim"]["schedule"] = "cosine"
    params["prepare"]["image_size"] = 8
    for section, values in (overrides or {}).items():
        params.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, dest).returncode == 0
    commit(dest, "init")
    return dest
