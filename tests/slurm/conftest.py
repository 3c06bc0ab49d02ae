"""Fixtures for tests that submit real jobs to a SLURM cluster (slurm/local-cluster.sh).

They skip, saying why, when no controller answers; CI starts the local cluster first,
so there they run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.slurm.helpers import REPO


def why_no_cluster() -> str | None:
    """None when sinfo reaches a controller with an idle or usable node, else the reason."""
    if shutil.which("sinfo") is None:
        return "sinfo not found (SLURM's client commands are not installed)"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo gave no answer in 30 s"
    if r.returncode != 0:
        return (r.stderr.strip() or "sinfo failed").splitlines()[-1]
    if not any(s.startswith(("idle", "mix", "alloc")) for s in r.stdout.split()):
        return f"no usable node (states: {r.stdout.split()})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    why = why_no_cluster()
    if why:
        pytest.skip(f"no SLURM cluster: {why}; start one with `bash slurm/local-cluster.sh start`")


@pytest.fixture(autouse=True)
def _jobs_import_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    # A job process unpickles tests.slurm.jobs by name: put the repo on its path
    # (sbatch and the local executor pass this process's environment on).
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{path}" if path else str(REPO))
