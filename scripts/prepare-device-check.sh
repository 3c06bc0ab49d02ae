#!/usr/bin/env bash
# Prepare what the device check needs on an offline GPU machine, in git-ignored .carry/:
# pinned cp312 wheels of what the device image lacks, and a CIFAR-10 subset. Prints the
# size of what would travel, the carry list and the command to run there.
#
#   scripts/prepare-device-check.sh [--data-root DIR] [--train-per-class N] [--val-per-class M]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/gpu_check.py prepare "$@"
