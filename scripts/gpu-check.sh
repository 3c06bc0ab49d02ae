#!/usr/bin/env bash
# A prepared GPU check: one command, about 6 minutes on one GPU, one report.
#
#   scripts/gpu-check.sh                      # on a CUDA machine
#   scripts/gpu-check.sh --device cpu         # dry run on the CPU (a few minutes)
#   scripts/gpu-check.sh --device cpu --quick # the smallest dry run
#   options: --data-root DIR (CIFAR-10 train.zip + test.zip; default ../shared/data/cifar10
#            beside the repository), --report FILE (default reports/bench/gpu-check.md)
#   env:     PYTHON (default .venv/bin/python, else python3)
#
# Steps, each with a time limit; a failing step is recorded as FAILED with its last
# lines and the others still run; the exit status is non-zero if any step failed.
#   1 cuda-tests  the tests that skip without CUDA ("needs CUDA"), listed, via pytest
#   2 bench       lowbit bench overhead: FP and W2A2, eager / compiled, fp32 / fp16
#                 (bf16 on the CPU), Brevitas if installed
#   3 ddp         torchrun: a process group from env://, W2A2 in DDP, lowbit.engine.fit
#   4 cifar       lowbit stage prepare (a CIFAR-10 subset, FFCV) + W2A2 direct twice:
#                 compile + fp16 (bf16 on the CPU) vs eager fp32 from the same seed; both
#                 top-1s, their difference and its binomial sd on the validation images
#                 ("within noise": |difference| <= 2 sd); on a GPU the step fails beyond
#                 3 sd (the sd counts the validation sample only, not the runs' paths)
# Full logs and the bench's own overhead.json / overhead.md go to reports/bench/gpu-check/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEVICE=cuda
QUICK=0
DATA_ROOT="$ROOT/../shared/data/cifar10"
REPORT=reports/bench/gpu-check.md
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --data-root) DATA_ROOT=$2; shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu-check: --device cpu|cuda" >&2; exit 2 ;; esac

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
ART=$(dirname "$REPORT")/gpu-check
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -rf "$ART"
mkdir -p "$ART"
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
FAILED=()
SECTIONS="$WORK/sections.md"
SUMMARY="$WORK/summary.md"
: >"$SECTIONS"
: >"$SUMMARY"

# ---- sizes: the GPU run, the CPU dry run, the quick dry run ----------------------------
BENCH_ROWS='fp.*.fp32,fp.*.mixed,lowbit_w2a2,brevitas_w2a2'
if [[ "$DEVICE" == cuda ]]; then
  MIXED=fp16 NPROC=1
  WORKERS=$(( $(nproc) < 8 ? $(nproc) : 8 ))
  BENCH_ARGS=(--reps 10 --one-memory-process)
  DDP_ARGS=(--device cuda --precision fp16 --steps 20 --epochs 2 --batch-size 128)
  # 10,000 training images (1,000 per class), all 10,000 test images; batch 200 divides
  # both, so no partial batch makes the compiled run recompile for a new shape
  CIFAR_ARGS=(--train-per-class 1000 --epochs 8 --batch-size 200 --fail-outside-noise)
  LIMITS=(cuda-tests=120 bench=300 ddp=150 cifar=360)
else
  # dry run: gloo with two ranks (a real all-reduce), a few hundred CIFAR images
  MIXED=bf16 NPROC=2 WORKERS=1
  CIFAR_ARGS=(--train-per-class 32 --val-per-class 20 --batch-size 40)
  if [[ "$QUICK" == 1 ]]; then
    BENCH_ARGS=(--quick)
    DDP_ARGS=(--device cpu --steps 3 --epochs 1 --batch-size 8)
    CIFAR_ARGS+=(--epochs 1)
  else
    BENCH_ARGS=(--batch-size 16 --reps 3 --one-memory-process)
    DDP_ARGS=(--device cpu --steps 6 --epochs 2 --batch-size 16)
    CIFAR_ARGS+=(--epochs 2)
  fi
  LIMITS=(cuda-tests=300 bench=1200 ddp=300 cifar=1500)
fi

limit_of() {  # the time limit (s) of a step
  local kv
  for kv in "${LIMITS[@]}"; do [[ "${kv%%=*}" == "$1" ]] && { echo "${kv#*=}"; return; }; done
  echo 600
}

# run_step NAME TITLE COMMAND...: run with a time limit, log everything, record the
# status, the seconds and the log's last lines (or a file the step names in $SHOW)
run_step() {
  local name=$1 title=$2 rc=0 t0=$SECONDS
  shift 2
  local log="$ART/$name.log" limit
  limit=$(limit_of "$name")
  echo "== $name: $title (limit ${limit}s)" >&2
  printf '$ %s\n' "$*" >"$log"
  timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1 || rc=$?
  local dt=$(( SECONDS - t0 )) status=PASSED
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then status="FAILED (timed out after ${limit}s)"
  elif [[ $rc -ne 0 ]]; then status="FAILED (exit $rc)"; fi
  [[ "$status" == PASSED ]] || FAILED+=("$name")
  [[ "$status" == PASSED && -n "${NOTE:-}" ]] && status="PASSED ($NOTE)"
  echo "   $status in ${dt}s" >&2
  echo "| $name | $title | $status | $dt |" >>"$SUMMARY"
  {
    echo; echo "## $name: $title"; echo
    echo "**$status** in ${dt} s. Command: \`$(head -1 "$log" | cut -c3-)\`"; echo
    if [[ "$status" == PASSED* && -n "${SHOW:-}" && -f "${SHOW:-}" ]]; then
      sed 's/^# /### /' "$SHOW"
    fi
    local open=; [[ "$status" == PASSED* ]] || open=' open'  # a failure shows its last lines
    echo; echo "<details$open><summary>last lines of the output (full log: $log)</summary>"; echo
    echo '```text'; tail -n "${TAIL:-40}" "$log" | cut -c1-300; echo '```'; echo '</details>'
  } >>"$SECTIONS"
  NOTE= SHOW= TAIL=
}

# ---- preflight ------------------------------------------------------------------------
CARD=$("$PYTHON" scripts/gpu_check.py device-name --device "$DEVICE" 2>&1 | tail -1) || true
if [[ "$DEVICE" == cuda ]] && ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  mkdir -p "$(dirname "$REPORT")"
  printf '# GPU check: FAILED\n\nNo CUDA device is visible to %s (%s). Nothing ran; use --device cpu for a dry run.\n' \
    "$PYTHON" "$CARD" >"$REPORT"
  echo "gpu-check: no CUDA device visible; wrote $REPORT" >&2
  exit 1
fi

# ---- 1: the CUDA tests ----------------------------------------------------------------
mapfile -t CUDA_TESTS < <("$PYTHON" scripts/gpu_check.py cuda-tests)
[[ "$DEVICE" == cpu ]] && NOTE="no CUDA here: the ${#CUDA_TESTS[@]} CUDA test(s) skip, as expected"
if [[ ${#CUDA_TESTS[@]} -gt 0 ]]; then
  TAIL=25 run_step cuda-tests "tests that skip without CUDA: ${CUDA_TESTS[*]}" \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider "${CUDA_TESTS[@]}"
else  # never run the whole suite by accident
  run_step cuda-tests "tests that skip without CUDA: none found" false
fi

# ---- 2: the overhead benchmark ----------------------------------------------------------
SHOW="$ART/overhead.md" TAIL=4 run_step bench "lowbit bench overhead on $DEVICE (fp32 / $MIXED)" \
  "$PYTHON" -m lowbit.cli bench overhead --device "$DEVICE" --variants "$BENCH_ROWS" \
  --out-dir "$ART" "${BENCH_ARGS[@]}"

# ---- 3: DDP under torchrun --------------------------------------------------------------
mkdir -p "$WORK/ddp"
SHOW="$WORK/ddp/ddp.md" TAIL=15 run_step ddp "torchrun --nproc_per_node=$NPROC, DDP through lowbit.engine.fit" \
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
  scripts/gpu_check.py ddp "${DDP_ARGS[@]}" --work "$WORK/ddp"

# ---- 4: CIFAR-10, compile + mixed precision vs plain fp32 -------------------------------
SHOW="$WORK/cifar/comparison.md" TAIL=30 run_step cifar "W2A2 CIFAR-10 via FFCV: compile + $MIXED vs eager fp32" \
  "$PYTHON" scripts/gpu_check.py cifar --device "$DEVICE" --precision "$MIXED" \
  --data-root "$DATA_ROOT" --work "$WORK/cifar" --workers "$WORKERS" "${CIFAR_ARGS[@]}"

# ---- the report -------------------------------------------------------------------------
TOTAL=$(( SECONDS - START ))
VERDICT=PASSED
[[ ${#FAILED[@]} -eq 0 ]] || VERDICT="FAILED (${FAILED[*]})"
mkdir -p "$(dirname "$REPORT")"
{
  if [[ "$DEVICE" == cpu ]]; then
    echo "# GPU check — CPU DRY RUN (not a GPU result)"
    echo
    echo "> **This is a dry run on the CPU$([[ $QUICK == 1 ]] && echo ', quick mode'):"
    echo "> it shows the script works, not how lowbit performs on a GPU.** CUDA tests"
    echo "> skip, the benchmark uses bf16 for fp16 and tiny sizes, DDP runs on gloo, and"
    echo "> the CIFAR-10 runs use a few hundred images for 1-2 epochs."
  else
    echo "# GPU check — $CARD"
  fi
  echo
  echo "Device: **$CARD**. Host $(hostname), $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')."
  echo "Command: \`scripts/gpu-check.sh --device $DEVICE$([[ $QUICK == 1 ]] && echo ' --quick')\`."
  echo
  echo "**Result: $VERDICT** — total ${TOTAL} s."
  echo
  echo "| step | what | status | seconds |"
  echo "|---|---|---|---|"
  cat "$SUMMARY"
  cat "$SECTIONS"
} >"$REPORT"
echo "gpu-check: $VERDICT in ${TOTAL}s; report: $REPORT" >&2
[[ ${#FAILED[@]} -eq 0 ]]
