"""An emulated device image from this test environment's own packages, in a second.

The lent GPU machine's Python holds a fixed list of packages (docs: platform.md, "The
GPU machine") and lacks pydantic, submitit, dvclive and ffcv. A venv without packages
of its own, whose one .pth file adds a folder of symbolic links to the installed
distributions of that list and of everything they require (read from their metadata),
imports what the image imports and fails on what it lacks, with no download.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

IMAGE = (
    "torch",
    "triton",
    "torchvision",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "seaborn",
    "numba",
    "opencv-python-headless",
    "opencv-python",
    "typer",
    "click",
    "rich",
    "pyyaml",
    "filelock",
    "tqdm",
    "pytest",
    "onnx",
    "onnxruntime",
    "pip",
    "setuptools",
    "pillow",
)
LACKS = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "submitit",
    "dvclive",
    "dvc",
    "ffcv",
    "lowbit",
)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> list[md.Distribution]:
    """The installed distributions of IMAGE and their requirements, minus LACKS."""
    installed = {_norm(d.metadata["Name"]): d for d in md.distributions()}
    todo, seen = [_norm(n) for n in IMAGE], set()
    while todo:
        name = todo.pop()
        if name in seen or name in map(_norm, LACKS) or name not in installed:
            continue
        seen.add(name)
        for req in installed[name].requires or []:
            if "extra ==" not in req:
                todo.append(_norm(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]))
    return [installed[n] for n in sorted(seen)]


def _tops(dist: md.Distribution) -> set[Path]:
    """The entries of site-packages a distribution owns (packages, modules, dist-info)."""
    base = Path(dist.locate_file(""))
    tops = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if parts and parts[0] not in ("..", "__pycache__") and not parts[0].endswith(".pth"):
            tops.add(base / parts[0])
    return {t for t in tops if t.exists()}


def make(root: Path) -> Path:
    """A venv at root/venv seeing only the image's packages; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    view = root / "packages"
    view.mkdir(parents=True)
    for dist in closure():
        for top in _tops(dist):
            link = view / top.name
            if not link.exists():
                link.symlink_to(top)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "image.pth").write_text(f"{view}\n")
    return python
