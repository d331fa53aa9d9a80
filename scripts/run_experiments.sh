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
# Each experiment's progress goes to runs/experiments/NAME-cpu.log. A finished experiment's
# figures (every run's config, results, measures and metrics, without checkpoints) are kept in
# docs/experiments/runs/NAME-cpu.tar.gz, and unpacked from there when runs/ lacks them, so the
# verdicts can be computed again (--resume trains nothing) on a machine that did not run them.
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
  kept="docs/experiments/runs/$name-cpu.tar.gz"
  if [ ! -f "$out/experiment.json" ] && [ -f "$kept" ]; then
    tar xzf "$kept" -C runs/experiments
  fi
  echo "$(date -u +%FT%TZ) $name: start" >> runs/experiments/progress.log
  if .venv/bin/siamkit experiment "$name" --scale cpu --output "$out" --resume \
      >> "$out.log" 2>&1; then
    echo "$(date -u +%FT%TZ) $name: done" >> runs/experiments/progress.log
    mkdir -p docs/experiments/runs
    tar czf "$kept" -C runs/experiments --exclude=checkpoints --exclude=tensorboard \
      --exclude='report.*' --exclude='*.png' "$name-cpu"
    .venv/bin/python benchmarks/experiments_summary.py --docs docs/experiments \
      > runs/experiments/summary.md
  else
    echo "$(date -u +%FT%TZ) $name: failed, see $out.log" >> runs/experiments/progress.log
  fi
done
