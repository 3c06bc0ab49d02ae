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
# A study outlives one machine: `bash study.sh --save` copies every seed's runs (finished
# runs' model.pt, metrics and history, the .done-<stage> markers, and the round checkpoints of
# a stage still running: about 1-3 MB a run) to state/seed<N>/, which is committed; an
# archived seed keeps only its markers there (results/seed<N>/ holds its files), seed 0 its
# FP networks too. A fresh checkout's first run restores state/ into runs/, so no finished
# epoch is trained twice, whatever machine continues the study. The data is prepared again
# on each machine (same seed, same split). A round checkpoint resumes only under the lowbit
# source that wrote it (lowbit.training.rounds.code_digest), so state/CODE names that commit
# and digest, and a checkout with other code refuses to continue the study: run study.sh
# from a worktree at that commit (`git worktree add ../study <commit>`, then copy state/).
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")"
# this checkout's lowbit (../..), not whichever one the venv's editable install points at
export PYTHONPATH="$(cd ../.. && pwd)${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${LOWBIT_VENV:-}" ]; then PATH="$LOWBIT_VENV/bin:$PATH"; fi
# TS+PQ+KD first: its round checkpoints (two networks with their optimisers, 4.5 MB a round,
# 4-6 rounds) are the largest, so what is still running when a machine goes is a small one
# that `--save` keeps (STATE_MAX_MB). The order changes no result: every stage starts from
# the FP networks (quantize-activations from quantize-weights) and seeds its own runs.
# STUDY_STAGES overrides the order, e.g. small stages first when little time is left.
# STUDY_BITS trains each stage at those bit-widths only (its plain run, no tagged variant):
# seeds added to the cells of an inconclusive verdict first (docs/claims.md), e.g.
#   STUDY_STAGES="direct ts-pq-kd" STUDY_BITS=2 bash study.sh 3
read -r -a STAGES <<< "${STUDY_STAGES:-ts-pq-kd direct quantize-weights quantize-activations bit-decay stochastic-precision distill}"
RESULTS=${RESULTS:-results}

digest() { python -c 'from lowbit.training.rounds import code_digest; print(code_digest())'; }

if [ "${1:-}" = --save ]; then
  mkdir -p state && printf 'commit %s\ndigest %s\n' "$(git rev-parse HEAD)" "$(digest)" > state/CODE
  for dir in runs/seed*/; do
    seed=$(basename "$dir") && tmp=state/$seed.tmp && rm -rf "$tmp" && mkdir -p "$tmp"
    if [ -e "$dir/.done-archive" ]; then  # archived: its markers (and seed 0's FP networks)
      cp -a "$dir"/.done-* "$tmp/"
      if [ "$seed" = seed0 ]; then cp -a "$dir/pretrain" "$tmp/"; fi
    else
      cp -a "$dir/." "$tmp/" && rm -rf "$tmp/.locks" "$tmp/.submitit"
    fi
    rm -f "$tmp/.done-prepare"  # data/ is not saved: a new machine prepares it again
    rm -rf "state/$seed" && mv "$tmp" "state/$seed"
  done
  # the repository travels to a lent GPU machine (64 MiB in all, scripts/gpucheck/carry.py
  # keeps it under 32): past STATE_MAX_MB the running stage's round checkpoints (KD rounds:
  # 4.5 MB each) stay behind, and that stage trains again on the next machine
  if [ "$(du -sm state | cut -f1)" -gt "${STATE_MAX_MB:-20}" ]; then
    rm -rf state/seed*/.resume && echo "study: state/ over ${STATE_MAX_MB:-20} MB: the running stage's round checkpoints are not kept"
  fi
  echo "study: saved $(du -sh state | cut -f1) to state/"; exit 0
fi
if [ -f state/CODE ]; then  # one python start (torch import) for the digest, not three
  want=$(sed -n 's/^digest //p' state/CODE) && have=$(digest)
  if [ "$have" != "$want" ]; then
    echo "study: state/ was trained by lowbit $(head -1 state/CODE) (code $want), this checkout's code is $have: continue it from a worktree at that commit (results/README.md)" >&2
    exit 1
  fi
fi
for dir in state/seed*/; do  # a fresh machine: restore; never over newer files
  seed=$(basename "$dir")
  if [ -d "$dir" ] && [ ! -e "runs/$seed" ]; then mkdir -p runs && cp -a "$dir" "runs/$seed"; fi
done

stage_bits() {  # the bit-widths params.yaml trains a stage at (pipeline.stage_bits, .bits)
  python -c 'import sys, yaml; p = yaml.safe_load(open("params.yaml"))["pipeline"]
print(*(p.get("stage_bits") or {}).get(sys.argv[1], p["bits"]))' "$1"
}

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
    if [ -n "${STUDY_BITS:-}" ]; then
      for bits in $STUDY_BITS; do
        step "runs/seed$seed/.done-$stage-$bits" lowbit stage "$stage" --bits "$bits" "${sets[@]}"
      done
      continue
    fi
    if [ "$stage" = ts-pq-kd ] && [ ! -f "runs/seed$seed/.done-$stage" ]; then
      # one bit-width a step: a finished one drops its round checkpoints (--all keeps
      # them until both are done), so at most one run's rounds are in flight
      for bits in $(stage_bits "$stage"); do
        step "runs/seed$seed/.done-$stage-$bits" lowbit stage "$stage" --bits "$bits" "${sets[@]}"
      done
      touch "runs/seed$seed/.done-$stage"
    fi
    step "runs/seed$seed/.done-$stage" lowbit stage "$stage" --all "${sets[@]}"
  done
  step "runs/seed$seed/.done-archive" lowbit archive --to "$RESULTS" "${sets[@]}"
  if [ "$seed" = 0 ]; then  # the bf16 check: seed 0's direct W2A2 and W4A4 again in fp32
    mkdir -p runs/seed0-fp32 && ln -sfn ../seed0/pretrain runs/seed0-fp32/pretrain
    for bits in 2 4; do
      step "runs/seed0-fp32/.done-direct-$bits" lowbit stage direct --bits "$bits" \
        --set common.seed=0 --set common.precision=fp32 --set common.runs_dir=runs/seed0-fp32 \
        --set common.live_dir=dvclive/seed0-fp32
    done
  fi
done
echo "study: $(date -u +%FT%TZ) finished seeds $*"
