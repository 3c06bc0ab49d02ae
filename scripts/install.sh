#!/usr/bin/env bash
# Set up lowbit on a fresh Debian/Ubuntu machine: FFCV's system libraries (when root),
# a .venv, and the pinned Python packages. Idempotent: a second run only checks.
# `install.sh` installs what the pipeline needs (`make run`); `install.sh dev` adds the
# test tools and the ONNX exporter (`make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
case "${1:-run}" in
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
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
# torch/torchvision first, as a pair: pip takes them from the machine's wheel cache where present.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
if [ -d .git ] && [ ! -d .dvc ]; then "$VENV/bin/dvc" init -q; fi
echo "lowbit install: ok ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'), extras: $extras)"
