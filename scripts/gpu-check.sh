#!/usr/bin/env bash
# lowbit's device check (scripts/gpu_check.py has the details): on a GPU machine, offline,
# with the wheels and data that scripts/prepare-device-check.sh put in .carry/.
#
#   bash scripts/gpu-check.sh [--out DIR]              # on the GPU: about 6 minutes
#   bash scripts/gpu-check.sh --device cpu [--quick]   # a dry run on the CPU
#
# The report goes to --out (default $OUT, else reports/bench/gpu-check/): gpu-check.md,
# gpu-check.json and gpu-check.log, rewritten after every step. Exit status 0: all passed.
# PYTHON picks the interpreter (default python3: the machine's own, with its torch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py run "$@"
