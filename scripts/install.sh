#!/usr/bin/env bash
# Set up lowbit on a fresh Debian/Ubuntu machine: FFCV's system libraries (when root),
# a .venv, and the pinned Python packages. Idempotent: a second run only checks.
# `install.sh` installs what the pipeline needs (`make run`); `install.sh dev` adds the
# test tools and the ONNX exporter (`make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
mode=${1:-run}
case "$mode" in
  run) more="" ;;
  dev) more="dev,export" ;;
  *) echo "usage: scripts/install.sh [run|dev]" >&2; exit 2 ;;
esac

need_apt=()
for pkg in pkg-config libopencv-dev libturbojpeg0-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
ffcv=""
if [ ${#need_apt[@]} -eq 0 ]; then
  ffcv="ffcv"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "lowbit install: apt-get install ${need_apt[*]} (FFCV's system libraries)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  ffcv="ffcv"
else
  echo "lowbit install: not root, FFCV's system libraries missing (${need_apt[*]});" \
       "installing without FFCV (the plain DataLoader path). See README 'On a cluster'." >&2
fi

extras=$(echo "$ffcv,$more" | sed 's/^,//; s/,$//')
py="$VENV/bin/python"
if [ "$mode" = dev ] && [ -x "$py" ]; then  # on top of `install.sh run` (make's order)
  "$py" -m pip install -q -e ".[$extras]"
  echo "lowbit install: ok (extras: $extras)"
  exit 0
fi
[ -x "$py" ] || "$PYTHON" -m venv "$VENV"
"$py" -m pip install -q --upgrade pip wheel setuptools
# pip runs on one core and spends a third of its time compiling bytecode. So it installs
# without compiling, while a second core compiles what the previous step installed and
# then builds lowbit's C++ kernels.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# torch/torchvision first, as a pair, and ninja for the kernels, with pyproject.toml's pins:
# pip takes them from the machine's wheel cache where present.
first=$("$py" -c 'import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if re.match(r"(torch|torchvision|ninja)\b", d)))')
[ "$(echo "$first" | wc -w)" -eq 3 ] || { echo "lowbit install: pyproject.toml must pin torch, torchvision and ninja (found: $first)" >&2; exit 1; }
# shellcheck disable=SC2086  # three requirement specifiers, none with spaces
"$py" -m pip install -q --no-compile $first
# compileall exits 1 for a file this Python cannot compile (torch ships Python-3.12-only
# test helpers); pip skips those files the same way, so that is not an install error.
( "$py" -m compileall -q "$site/torch" "$site/torchvision" >/dev/null || true
  echo "lowbit install: kernels $(PYTHONPATH=. "$py" -c \
    'from lowbit.quant._kernels import prebuild; print(prebuild())')" ) &
background=$!
trap 'kill "$background" 2>/dev/null || true' EXIT  # pip failed: stop the helper too
"$py" -m pip install -q --no-compile -e ".${extras:+[$extras]}"
wait "$background"
trap - EXIT
"$py" -m compileall -q -j 0 -x '/site-packages/(torch|torchvision)/' "$site" >/dev/null || true
if [ -d .git ] && [ ! -d .dvc ]; then "$VENV/bin/dvc" init -q; fi
echo "lowbit install: ok ($("$py" -c 'import torch; print("torch", torch.__version__)'), extras: $extras)"
