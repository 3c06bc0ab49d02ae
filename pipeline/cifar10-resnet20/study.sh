#!/usr/bin/env bash
# The CIFAR-10 study behind reports/cifar10-resnet20-cpu, seed by seed, resumable.
#
#   bash study.sh 0 1 2          # from anywhere; lowbit's venv on PATH (or LOWBIT_VENV)
#
# The same stage functions `dvc repro` calls, with one difference DVC cannot express: the
# FP networks (pretrain: plain and clipped, pipeline.fp_starts) are trained once, with
# seed 0, and every seed's quantized runs start from them, as the paper starts every method
# from one pretrained model. The data split is prepared once too (seed 0), so no seed
# validates on images an FP network trained on. A seed changes the quantized runs' weight
# draws and batch order, so the methods of a seed are paired (docs/claims.md).
#
# Seed N's runs go to runs/seed<N>/; when all of them are done they are archived to
# results/seed<N>/ (`lowbit archive`). A stage that finished leaves runs/seed<N>/.done-<stage>
# and is skipped on a rerun; a stage that was killed resumes from its last epoch.
#
# A study outlives one machine: `bash study.sh --save` copies the shared FP networks and
# their round checkpoints (runs/seed0/pretrain, runs/seed0/.resume/pretrain: a few MB)
# to state/, which is committed; a fresh checkout's first run restores them, so the FP
# networks are trained once whatever machine continues the study.
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${LOWBIT_VENV:-}" ]; then PATH="$LOWBIT_VENV/bin:$PATH"; fi
STAGES=(direct quantize-weights quantize-activations bit-decay stochastic-precision distill ts-pq-kd)
RESULTS=${RESULTS:-results}
STATE=state/seed0  # the shared FP networks' files, as in runs/seed0/

if [ "${1:-}" = --save ]; then
  rm -rf "$STATE.tmp" && mkdir -p "$STATE.tmp/.resume"
  [ -d runs/seed0/pretrain ] && cp -r runs/seed0/pretrain "$STATE.tmp/"
  [ -d runs/seed0/.resume/pretrain ] && cp -r runs/seed0/.resume/pretrain "$STATE.tmp/.resume/"
  rm -rf "$STATE" && mv "$STATE.tmp" "$STATE"
  echo "study: saved $(du -sh "$STATE" | cut -f1) to $STATE"; exit 0
fi
if [ -d "$STATE" ] && [ ! -e runs/seed0/.done-pretrain ]; then  # never over newer files
  mkdir -p runs/seed0 && cp -rn "$STATE/." runs/seed0/
fi

step() {  # step <done-marker> lowbit stage ... : run once, then mark it done
  local marker=$1; shift
  if [ -f "$marker" ]; then echo "study: done already: $*"; return; fi
  echo "study: $(date -u +%FT%TZ) start: $*"
  nice -n 5 "$@"
  mkdir -p "$(dirname "$marker")" && touch "$marker"
}

step runs/seed0/.done-prepare lowbit stage prepare
step runs/seed0/.done-pretrain lowbit stage pretrain --all --set common.runs_dir=runs/seed0 \
  --set common.live_dir=dvclive/seed0
for seed in "$@"; do
  # each seed's dvclive logs in a folder of its own: one shared folder would keep the last seed's
  sets=(--set "common.seed=$seed" --set "common.runs_dir=runs/seed$seed"
        --set "common.live_dir=dvclive/seed$seed")
  mkdir -p "runs/seed$seed"
  if [ "$seed" != 0 ]; then ln -sfn ../seed0/pretrain "runs/seed$seed/pretrain"; fi
  for stage in "${STAGES[@]}"; do
    step "runs/seed$seed/.done-$stage" lowbit stage "$stage" --all "${sets[@]}"
  done
  step "runs/seed$seed/.done-archive" lowbit archive --to "$RESULTS" "${sets[@]}"
done
echo "study: $(date -u +%FT%TZ) finished seeds $*"
