#!/usr/bin/env bash
# An emulated GPU-machine image, for the offline dry run of the device check:
#
#   scripts/device-venv.sh [VENV]        # default /work/venv312 (outside the repository)
#   scripts/prepare-device-check.sh      # what travels: .carry/ (wheels + CIFAR subset)
#   PYTHON=VENV/bin/python scripts/gpu-check.sh --device cpu --out DIR
#
# The lent machine (docs: platform.md, "The GPU machine") runs Python 3.12 with torch
# 2.11, torchvision, triton and a list of common packages, and lacks pydantic,
# submitit, dvclive and ffcv. This venv holds the same: torch 2.11.0 and its companions
# (PyPI's Linux build, which is a CUDA build: it runs on the CPU here, and its CUDA
# libraries come from this machine's local index, since torch loads them at import),
# then the image's package list, unpinned as in the image, then the packages the image
# lacks are removed again should a dependency have pulled one in.
set -euo pipefail
VENV=${1:-/work/venv312}
PY=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
LOCAL_CUDA=${LOCAL_CUDA:-file:///opt/pypi-more/simple}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# (a machine-wide pip config may list local indexes: their "is ignored" lines are noise)
pip() { "$VENV/bin/python" -m pip -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip install --upgrade pip
# torch 2.11 as the image has it; --no-deps: its CUDA libraries come next, from disk
pip install --no-deps torch==2.11.0 torchvision==0.26.0 triton==3.6.0
pip install filelock typing-extensions "sympy>=1.13.3" networkx jinja2 fsspec "setuptools<82"
pip install --no-deps --index-url "$LOCAL_CUDA" --extra-index-url file:///opt/pypi/simple \
  nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 \
  nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse \
  nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
# the image's list (platform.md), as unpinned as the image's
pip install numpy pandas scipy scikit-learn matplotlib seaborn numba opencv-python-headless \
  typer click rich pyyaml tqdm pytest onnx onnxruntime
# what the image lacks must be missing here too, whatever a dependency pulled in
for pkg in pydantic pydantic-core annotated-types typing-inspection submitit dvclive dvc ffcv; do
  if "$VENV/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -q -y "$pkg"
  fi
done
# from / : a checkout's own folders (the repository's dvclive/ logs) are no packages
cd /
"$VENV/bin/python" - <<'EOF'
import importlib.util, sys, torch
lacking = [m for m in ("pydantic", "submitit", "dvclive", "ffcv") if importlib.util.find_spec(m)]
assert not lacking, f"the emulated image must lack {lacking}"
print(f"device venv: Python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}")
EOF
