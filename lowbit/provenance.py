"""What every result carries: git commit, package versions, machine, device, time."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "lowbit", "torch", "torchvision", "numpy", "ffcv", "dvc", "dvclive", "submitit", "pydantic",
)  # fmt: skip
# Files DVC and lowbit write while a pipeline runs, and the params (recorded in run.json):
# a change to these does not make the code that produced a result "dirty".
RUN_FILES = (
    "**/dvc.lock", "**/.gitignore", "**/runs/**", "**/reports/**", "**/dvclive/**",
    "**/results/**", "**/params*.yaml",
)  # fmt: skip


def dirty_files(cwd: Path) -> list[str] | None:
    """Tracked files changed against HEAD, outside RUN_FILES (None: not a git checkout)."""
    excludes = [f":(top,exclude,glob){p}" for p in RUN_FILES]
    out = _git(["status", "--porcelain", "--untracked-files=no", "--", ":/", *excludes], cwd)
    return None if out is None else [ln.split(maxsplit=1)[1] for ln in out.splitlines() if ln]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()})"


def provenance(cwd: Path, device: torch.device, seed: int) -> dict[str, Any]:
    dirty = dirty_files(cwd)
    return {
        "git_commit": _git(["rev-parse", "HEAD"], cwd),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "git_dirty_files": (dirty or [])[:20],
        "versions": versions(),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        # the SIMD kernels ATen dispatches to (DEFAULT, AVX2, AVX512, ...): hosts with the
        # same model name can differ in it, and with it in a float result's last bits
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
    }
