"""DVC on SLURM: the sbatch driver, and the default pipeline with `executor: slurm`.

Both run real `dvc repro` in a temporary copy, every stage a job on the local cluster,
so they take minutes: marked slow (CI runs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.slurm.helpers import LOCAL_PROFILE, REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `lowbit` for dvc's shell
    return env


def _run(cmd: list[str], cwd: Path, timeout: int, **kw: Any) -> subprocess.CompletedProcess:
    r = subprocess.run(
        cmd, cwd=cwd, env=kw.pop("env", _env()), capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """`--set`-style override: section.key=value on a params tree."""
    *path, last = dotted.split(".")
    for k in path:
        tree = tree.setdefault(k, {})
    tree[last] = value


def test_driver_runs_dvc_repro_as_a_job(slurm_cluster, tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "prepare": {
                        "cmd": "lowbit stage prepare",
                        "params": ["prepare"],
                        "outs": ["data/prepared"],
                    }
                }
            }
        )
    )
    params = {
        "common": {"executor": "slurm", "progress": False, "workers": 0},
        "prepare": {"image_size": 8},
        "slurm": {"profile": str(LOCAL_PROFILE)},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _run([str(VENV_BIN / "dvc"), "init", "--no-scm", "-q"], tmp_path, 60)
    env = {**_env(), "LOWBIT_VENV": str(VENV_BIN.parent)}
    log = tmp_path / "driver.log"
    cmd = ["sbatch", "--wait", f"--output={log}", str(REPO / "slurm" / "driver.sbatch")]
    _run(cmd, tmp_path, 600, env=env)
    text = log.read_text()
    assert "driver: dvc repro" in text and "slurm job" in text  # the stage was its own job
    assert (tmp_path / "data/prepared/meta.json").is_file()
    assert "prepare" in (tmp_path / "dvc.lock").read_text()


SHRINK = {
    "common.executor": "slurm",
    "common.progress": False,
    "common.workers": 0,
    "common.batch_size": 64,
    "slurm.profile": str(LOCAL_PROFILE),
    "prepare.image_size": 8,
    "pretrain.epochs": 1,
    "quantize_weights.epochs": 1,
    "quantize_activations.epochs": 1,
    "bit_decay.epochs": 1,
    "direct.epochs": 1,
    "stochastic_precision.epochs": 1,
    "distill.epochs": 1,
}


@pytest.mark.timeout(1800)  # ~9 jobs; 8.5 min on a busy 2-core machine
def test_default_pipeline_reproduces_on_slurm(slurm_cluster, tmp_path):
    """The root dvc.yaml + params.yaml, shrunk (1 epoch per stage, 2 bits only, 8x8
    images), every stage a SLURM job: `dvc repro` ends with the report."""
    pipe = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipe["vars"] = [{"bits": [2]}]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipe, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in SHRINK.items():
        _set(params, key, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the code and reference files the stages list as deps (DVC hashes them)
    shutil.copytree(REPO / "lowbit", tmp_path / "lowbit", ignore=shutil.ignore_patterns("*.pyc"))
    if (REPO / "reports" / "reference").is_dir():
        shutil.copytree(REPO / "reports" / "reference", tmp_path / "reports" / "reference")
    _run(["git", "init", "-q"], tmp_path, 60)
    _run([str(VENV_BIN / "dvc"), "init", "-q"], tmp_path, 60)
    r = _run([str(VENV_BIN / "dvc"), "repro"], tmp_path, 1700)
    assert r.stdout.count("slurm job") + r.stderr.count("slurm job") >= 9
    metrics = tmp_path / str(params["common"]["reports_dir"]) / "metrics.json"
    assert metrics.is_file(), r.stdout[-2000:]
    status = _run([str(VENV_BIN / "dvc"), "status"], tmp_path, 120)
    assert "up to date" in status.stdout
