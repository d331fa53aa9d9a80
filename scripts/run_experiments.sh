#!/usr/bin/env bash
# Runs the catalogue's experiments at the cpu scale, one at a time, each continued with --resume
# (finished runs and measures are kept, so the script can be stopped and started again across
# days), the digits-scale experiments first; after each one the summary and the reports in
# docs/experiments are regenerated. Not part of CI: the whole catalogue takes many hours of a
# 2-core CPU.
#
#   bash scripts/run_experiments.sh                      # every experiment, in the order below
#   bash scripts/run_experiments.sh simsiam_predictor    # only those named
#
# Each experiment's progress goes to runs/experiments/NAME-cpu.log.
set -uo pipefail
cd "$(dirname "$0")/.."
ORDER=(
  # digits (and Gaussian) scale: minutes a run
  simsiam_stop_gradient simsiam_predictor simsiam_similarity simsiam_symmetry simsiam_batchnorm
  simsiam_batch_size simsiam_alternation byol_normalization simsiam_methods mine_gaussian
  # CIFAR-10 CPU recipes: tens of minutes a run
  simclr_projection_head simclr_augmentations simclr_colour_strength simclr_batch_size
  vicreg_terms barlow_twins simclrv2_head_depth simclrv2_distillation
)
[ "$#" -gt 0 ] && ORDER=("$@")
mkdir -p runs/experiments
for name in "${ORDER[@]}"; do
  out="runs/experiments/$name-cpu"
  echo "$(date -u +%FT%TZ) $name: start" >> runs/experiments/progress.log
  if .venv/bin/siamkit experiment "$name" --scale cpu --output "$out" --resume \
      >> "$out.log" 2>&1; then
    echo "$(date -u +%FT%TZ) $name: done" >> runs/experiments/progress.log
    .venv/bin/python benchmarks/experiments_summary.py --docs docs/experiments \
      > runs/experiments/summary.md
  else
    echo "$(date -u +%FT%TZ) $name: failed, see $out.log" >> runs/experiments/progress.log
  fi
done
