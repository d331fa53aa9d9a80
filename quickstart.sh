#!/usr/bin/env bash
# Quick start: set up .venv with siamkit alone (no test tools), pretrain SimSiam on the bundled
# digits, print kNN accuracy of the trained encoder beside the same encoder at random
# initialisation. The tests: scripts/test.sh (it adds the test tools).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh --user
exec .venv/bin/siamkit pretrain --recipe simsiam/digits --overwrite "$@"
