#!/usr/bin/env bash
# Create .venv in the repository root and install siamkit with its test tools into it.
# Plain `pip install torch torchvision` is used (the registry's build; it runs on CPUs too).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "siamkit installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
