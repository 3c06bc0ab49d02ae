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

PACKAGES = ("lowbit", "torch", "torchvision", "numpy", "ffcv", "dvc", "submitit", "pydantic")


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
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {
        "git_commit": _git(["rev-parse", "HEAD"], cwd),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "versions": versions(),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
    }
