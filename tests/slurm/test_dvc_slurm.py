"""DVC on SLURM: the sbatch driver, and the default pipeline with `executor: slurm`.

Both run real `dvc repro` in a temporary copy, every stage a job on the local cluster,
so they take minutes: marked slow (CI runs them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pipeline import shrunk
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


@pytest.mark.timeout(1200)  # 4 jobs; 1-2 min on a busy 2-core machine
def test_default_pipeline_reproduces_on_slurm(slurm_cluster, tmp_path):
    """The root dvc.yaml + params.yaml, shrunk (1 epoch per final round, 2 bits only, 8x8
    images), every stage a SLURM job: `dvc repro direct distill` runs prepare, pretrain and
    the two (distill trains a teacher and a student in one job), and leaves them up to date.
    The whole graph in-process is tests/pipeline/test_dvc_repro.py's; each stage goes
    through the same `launch`, so four jobs cover what SLURM adds."""
    overrides = {
        "common": {"executor": "slurm", "progress": False, "workers": 0, "batch_size": 64},
        "slurm": {"profile": str(LOCAL_PROFILE)},
    }
    repo = shrunk.shrunken_pipeline(tmp_path / "repo", bits=[2], overrides=overrides, epochs=1)
    r = _run([str(VENV_BIN / "dvc"), "repro", "direct", "distill"], repo, 1100)
    jobs = set(re.findall(r"stage (\S+) is slurm job (\d+)", r.stdout + r.stderr))
    assert {s for s, _ in jobs} == {"prepare", "pretrain", "direct", "distill"}, jobs
    assert len({j for _, j in jobs}) == 4  # one job each
    for stage, run in (("direct", "direct/w2a2"), ("distill", "distill/w2a2")):
        done = json.loads((repo / "runs" / run / "run.json").read_text())
        assert (stage, done["provenance"]["slurm_job_id"]) in jobs, run  # trained in its job
    status = _run([str(VENV_BIN / "dvc"), "status", "direct", "distill"], repo, 120)
    assert "up to date" in status.stdout
