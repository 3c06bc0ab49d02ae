"""Step `setup`: install the carried wheels without an index, then say what the machine is.

The lent machine is offline: the wheels in .carry/wheels (scripts/prepare-device-check.sh
downloaded them here) go into a folder of their own with `pip install --no-index
--no-deps --target`, which the later steps put first on PYTHONPATH. The image's torch
is used as it is. FFCV cannot be carried as a wheel (its C extension links the system's
OpenCV and libjpeg-turbo): where it is not importable, training uses lowbit's torch
loader, and this step says why.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gpucheck.record import Record


def run(rec: Record, s: dict) -> None:
    site, wheels = Path(s["site"]), sorted(Path(s["carry"], "wheels").glob("*.whl"))
    if wheels:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        cmd += ["--disable-pip-version-check", "--upgrade", "--target", str(site)]
        out = subprocess.run([*cmd, *map(str, wheels)], capture_output=True, text=True)
        rec.check(
            "carried wheels installed offline",
            out.returncode == 0,
            {"wheels": len(wheels), "into": str(site)},
            (out.stderr.strip().splitlines() or [""])[-1][:300],
        )
    else:
        rec.check("carried wheels", None, {}, f"none in {s['carry']}/wheels: the packages here")
    _imports(rec, s)
    _machine(rec, s)
    _ffcv(rec)


def _imports(rec: Record, s: dict) -> None:
    """lowbit's command line imports in a fresh process with the steps' PYTHONPATH."""
    code = "import lowbit.cli, lowbit.training.run, lowbit.launch; print('ok')"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=s["root"]
    )
    versions = {}
    for dist in ("torch", "torchvision", "numpy", "pydantic", "submitit", "typer", "triton"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "absent"
    last = (out.stderr.strip().splitlines() or [""])[-1][:300]
    ok = out.returncode == 0
    rec.check("lowbit imports offline (cli, training, launch)", ok, versions, "" if ok else last)
    rec.info(python=sys.version.split()[0], versions=versions)


def _machine(rec: Record, s: dict) -> None:
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "cpus": os.cpu_count(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    rec.info(machine=info)
    wanted = s["device"] == "cuda"
    rec.check(
        "the device the check was asked for",
        cuda if wanted else None,
        info,
        "CUDA available" if cuda else ("no CUDA device visible" if wanted else "CPU dry run"),
    )


def _ffcv(rec: Record) -> None:
    """Whether FFCV imports; if not, whether it could be built here at all."""
    try:
        import ffcv  # noqa: F401

        rec.check("data loader", None, {"loader": "ffcv", "ffcv": md.version("ffcv")})
        return
    except ImportError as e:
        reason = str(e).splitlines()[0]
    probe = (
        shutil.which("pkg-config")
        and subprocess.run(
            ["pkg-config", "--exists", "opencv4", "libturbojpeg"], capture_output=True
        ).returncode
        == 0
    )
    rec.check(
        "data loader",
        None,
        {"loader": "torch", "ffcv_import": reason, "opencv4_and_libturbojpeg": bool(probe)},
        "FFCV is not importable and does not travel (its C extension is built against the "
        "system's OpenCV and libjpeg-turbo, which an offline image without apt lacks): "
        "lowbit's torch loader is used",
    )
