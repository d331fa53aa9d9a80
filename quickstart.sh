#!/usr/bin/env bash
# Quick start: set up .venv, pretrain SimSiam on the bundled digits, print kNN accuracy of the
# trained encoder beside the same encoder at random initialisation.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/siamkit pretrain --config configs/simsiam/digits.yaml --overwrite "$@"
