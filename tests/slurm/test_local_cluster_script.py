"""slurm/local-cluster.sh: a second start is fast and harmless; status reports all daemons."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.slurm.helpers import REPO

SCRIPT = REPO / "slurm" / "local-cluster.sh"


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def test_script_is_executable_and_parses():
    assert os.access(SCRIPT, os.X_OK), "CI starts the cluster only if the script is executable"
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    r = _run("frobnicate")
    assert r.returncode == 2 and "usage:" in r.stderr


@pytest.mark.slurm
def test_second_start_is_fast_and_status_lists_daemons(slurm_cluster):
    if os.geteuid() != 0:
        pytest.skip("the local cluster script needs root")
    t0 = time.perf_counter()
    r = _run("start")
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stdout, r.stdout
    assert wall < 10, f"second start took {wall:.1f} s"
    s = _run("status")
    assert s.returncode == 0, s.stdout + s.stderr
    for daemon in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"):
        assert f"{daemon}" in s.stdout and "stopped" not in s.stdout
    assert "idle" in s.stdout or "mix" in s.stdout or "alloc" in s.stdout
